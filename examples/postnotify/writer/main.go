// Command writer is the example's writer service: POST /posts stores a
// post in Redis and notifies the reader service, lineage attached.
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
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve POST /posts on")
	primary := flag.String("redis", "127.0.0.1:6379", "region A's Redis primary")
	reader := flag.String("reader", "http://127.0.0.1:8081", "the reader service")
	flag.Parse()
	w := &postnotify.Writer{Posts: redis.NewClient(&redis.Options{Addr: *primary}), ReaderURL: *reader, HTTP: &http.Client{Timeout: 30 * time.Second}}
	log.Printf("writer on %s: posts to %s, notifications to %s", *listen, *primary, *reader)
	log.Fatal((&http.Server{Addr: *listen, Handler: w, ReadHeaderTimeout: 5 * time.Second}).ListenAndServe())
}
