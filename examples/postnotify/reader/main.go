// Command reader is the example's reader service: POST /notify reads the
// notified post from this region's Redis replica, after the barrier.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/examples/postnotify"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve POST /notify on")
	replica := flag.String("redis", "127.0.0.1:6380", "region B's Redis replica")
	off := flag.Bool("no-antipode", false, "read at once, without the barrier (to see the anomaly)")
	flag.Parse()
	c := redis.NewClient(&redis.Options{Addr: *replica})
	r := &postnotify.Reader{Posts: c}
	if !*off {
		r.Barrier = postnotify.NewReplicaBarrier(c)
	}
	log.Printf("reader on %s: posts from %s, antipode %v", *listen, *replica, !*off)
	log.Fatal((&http.Server{Addr: *listen, Handler: r, ReadHeaderTimeout: 5 * time.Second}).ListenAndServe())
}
