package aws

import (
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"tide/autoscale/provision"
)

// UserDataOptions configure the boot script UserData renders.
type UserDataOptions struct {
	// Group and Region of the Auto Scaling group the instance belongs to
	// (both needed: the node finds its peers in the group).
	Group  string
	Region string
	// EndpointURL overrides the AWS endpoints for `tide aws-peers`
	// (empty: AWS).
	EndpointURL string
	// BinaryURL is where the tide binary (linux, the instances'
	// architecture) is downloaded from, e.g. a release asset or a
	// presigned S3 URL. Empty means the AMI already has it at BinaryPath.
	BinaryURL string
	// BinaryPath is where the binary is installed (default
	// /usr/local/bin/tide), an absolute path without whitespace; the start
	// script goes next to it as tide-start.
	BinaryPath string
	// DataDir is the node's --data-dir (default /var/lib/tide).
	DataDir string
	// Ports of the node: 0 means DefaultChordPort and DefaultHTTPPort.
	ChordPort int
	HTTPPort  int
	// NodeFlags are further `tide node` flags, e.g. {"--capacity", "8GiB"}.
	NodeFlags []string
	// PeerWait is how long the start script waits for a live peer before it
	// exits non-zero and lets systemd start it again (default 10m).
	PeerWait time.Duration
	// TLS, when set, is the nodes' mutual TLS material: the script writes
	// the files to TLSDir (the key mode 0600) and the node starts with the
	// --tls-* flags naming them. The certificate names the addresses
	// peers and the controller dial: the private IPs the group's subnets
	// hand out. Nodes keep --insecure, so that /healthz (tide aws-peers
	// --healthy) answers plain text, while ring changes take mutual TLS.
	TLS *provision.TLS
	// TLSDir is where the TLS files go (default DefaultTLSDir).
	TLSDir string
}

// DefaultTLSDir is where user data writes the TLS files.
const DefaultTLSDir = "/etc/tide/tls"

func (o *UserDataOptions) defaults() {
	if o.BinaryPath == "" {
		o.BinaryPath = "/usr/local/bin/tide"
	}
	if o.DataDir == "" {
		o.DataDir = "/var/lib/tide"
	}
	if o.ChordPort == 0 {
		o.ChordPort = DefaultChordPort
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = DefaultHTTPPort
	}
	if o.PeerWait <= 0 {
		o.PeerWait = 10 * time.Minute
	}
	if o.TLSDir == "" {
		o.TLSDir = DefaultTLSDir
	}
}

// UserData renders the cloud-init user data (a bash script) for the launch
// template of a group of tide nodes. On first boot it downloads the tide
// binary from o.BinaryURL (unless the AMI has it), writes the start script
// tide-start and the systemd unit tide.service, and starts the unit.
//
// The start script reads the instance's private IP from the instance
// metadata service (IMDSv2) and runs
//
//	tide node --chord-addr 0.0.0.0:5057 --http-addr 0.0.0.0:5058 \
//	    --advertise $PRIVATE_IP --data-dir /var/lib/tide --join $PEER
//
// where $PEER is the first line of `tide aws-peers --group G --region R
// --exclude-self --healthy`: the oldest other InService instance whose node
// answers /healthz. Without such a peer it passes no --join, starting a new
// ring, only when it is itself the group's oldest InService instance; any
// other instance waits for a live peer (up to o.PeerWait, then exits so that
// systemd starts it again), so that instances booting together form one
// ring. The unit restarts the node when it fails, but not when it exits
// cleanly after a drain (POST /internal/leave).
//
// With o.TLS it writes the TLS files first and the node gets the --tls-*
// flags.
//
// Every value is shell-quoted; the script passes `bash -n`. UserData
// fails if o.TLS is incomplete, or the script exceeds EC2's 16 KiB.
func UserData(o UserDataOptions) (string, error) {
	o.defaults()
	if o.TLS != nil {
		if err := validateFiles(o.TLS); err != nil {
			return "", err
		}
		o.NodeFlags = append(slices.Clone(o.NodeFlags), o.TLS.Flags(o.TLSDir)...)
	}
	start := startScript(o)
	startPath := path.Join(path.Dir(o.BinaryPath), "tide-start")
	unit := unitFile("tide storage node", startPath, 10)
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	b.WriteString("# Boot script of a tide storage node in an EC2 Auto Scaling group: installs\n")
	b.WriteString("# the tide binary, its start script and the systemd unit tide.service.\n")
	b.WriteString("set -euo pipefail\n")
	installBinary(&b, o.BinaryPath, o.BinaryURL)
	fmt.Fprintf(&b, "mkdir -p %s\n", shq(o.DataDir))
	if o.TLS != nil {
		writeTLS(&b, o.TLSDir, o.TLS)
	}
	installService(&b, startPath, start, "tide.service", unit)
	if b.Len() > maxUserData {
		return "", errTooLarge("node", b.Len())
	}
	return b.String(), nil
}

// validateFiles checks that t has the three files user data writes: a
// TLS.Issue is for Roles, which resolves it per instance (TLS.For).
func validateFiles(t *provision.TLS) error {
	if len(t.CA) == 0 || len(t.Cert) == 0 || len(t.Key) == 0 {
		return errors.New("aws: TLS in user data needs the CA, the certificate and the key (an Issue func is resolved per role by Roles)")
	}
	return nil
}

// errTooLarge says user data of n bytes is over EC2's limit.
func errTooLarge(what string, n int) error {
	return fmt.Errorf("aws: the %s's user data is %d bytes, over EC2's %d (with TLS: a certificate naming many addresses, a large CA bundle?)", what, n, maxUserData)
}

// writeTLS writes the commands that create dir and the TLS files in it,
// from base64: the CA and certificate mode 0644, the key 0600 (created
// so, never readable by others).
func writeTLS(b *strings.Builder, dir string, t *provision.TLS) {
	fmt.Fprintf(b, "mkdir -p -m 0755 %s\n", shq(dir))
	for _, f := range []struct {
		name string
		data []byte
		mode string
	}{{provision.TLSCAFile, t.CA, "0644"}, {provision.TLSCertFile, t.Cert, "0644"}, {provision.TLSKeyFile, t.Key, "0600"}} {
		file := path.Join(dir, f.name)
		tmp := shq(file + ".tmp")
		enc := base64.StdEncoding.EncodeToString(f.data)
		// The delimiter has '_', which base64 never does.
		fmt.Fprintf(b, "(umask 077; base64 -d > %s) <<'TIDE_B64'\n", tmp)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\n")
			enc = enc[76:]
		}
		fmt.Fprintf(b, "%s\nTIDE_B64\n", enc)
		fmt.Fprintf(b, "chmod %s %s\nmv -f %s %s\n", f.mode, tmp, tmp, shq(file))
	}
}

// installBinary writes the commands that download the tide binary from url
// to path (unless url is empty: the AMI has it) and check that it is there.
func installBinary(b *strings.Builder, path, url string) {
	fmt.Fprintf(b, "BIN=%s\n", shq(path))
	fmt.Fprintf(b, "URL=%s\n", shq(url))
	b.WriteString(`if [ -n "$URL" ]; then
	mkdir -p "$(dirname "$BIN")"
	curl -fsSL --retry 10 --retry-delay 3 --retry-connrefused -o "$BIN.download" "$URL"
	chmod 0755 "$BIN.download"
	mv -f "$BIN.download" "$BIN"
fi
if [ ! -x "$BIN" ]; then
	echo "tide user data: no tide binary at $BIN" >&2
	exit 1
fi
`)
}

// installService writes the start script and the systemd unit named name
// that runs it, and starts the unit.
func installService(b *strings.Builder, startPath, start, name, unit string) {
	writeFile(b, startPath, start)
	fmt.Fprintf(b, "chmod 0755 %s\n", shq(startPath))
	writeFile(b, "/etc/systemd/system/"+name, unit)
	b.WriteString("systemctl daemon-reload\n")
	fmt.Fprintf(b, "systemctl enable --now %s\n", name)
}

// writeFile writes a shell command that creates file with content, through
// a quoted here-document whose delimiter does not occur in content.
func writeFile(b *strings.Builder, file, content string) {
	delim := "TIDE_EOF"
	for lineIn(content, delim) {
		delim += "_"
	}
	if !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	fmt.Fprintf(b, "cat > %s <<'%s'\n%s%s\n", shq(file), delim, content, delim)
}

func lineIn(s, line string) bool {
	for l := range strings.SplitSeq(s, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// startScript is the script tide.service runs: find a peer, then exec the
// node.
func startScript(o UserDataOptions) string {
	var b strings.Builder
	b.WriteString(`#!/bin/bash
# Starts this instance's tide node (run by tide.service). It joins a live node
# of the Auto Scaling group found by "tide aws-peers", or starts a new ring
# when no node answers and this is the group's oldest in-service instance.
set -uo pipefail
`)
	fmt.Fprintf(&b, "TIDE=%s\n", shq(o.BinaryPath))
	fmt.Fprintf(&b, "GROUP=%s\n", shq(o.Group))
	fmt.Fprintf(&b, "REGION=%s\n", shq(o.Region))
	fmt.Fprintf(&b, "ENDPOINT_URL=%s\n", shq(o.EndpointURL))
	fmt.Fprintf(&b, "CHORD_PORT=%d\n", o.ChordPort)
	fmt.Fprintf(&b, "HTTP_PORT=%d\n", o.HTTPPort)
	fmt.Fprintf(&b, "DATA_DIR=%s\n", shq(o.DataDir))
	fmt.Fprintf(&b, "PEER_WAIT=%d\n", int64((o.PeerWait+time.Second-1)/time.Second))
	b.WriteString("NODE_FLAGS=(")
	for _, f := range o.NodeFlags {
		b.WriteString(" " + shq(f))
	}
	b.WriteString(" )\n")
	b.WriteString(`
log() { echo "tide-start: $*" >&2; }
if [ -z "$GROUP" ] || [ -z "$REGION" ]; then
	log "no Auto Scaling group or region configured"
	exit 1
fi
imds() {
	local token
	token=$(curl -fsS -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token) || return 1
	curl -fsS -m 5 -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}
if ! PRIVATE_IP=$(imds local-ipv4) || [ -z "$PRIVATE_IP" ]; then
	log "cannot read the private IP from the instance metadata service"
	exit 1
fi
SELF="$PRIVATE_IP:$CHORD_PORT"
peers=("$TIDE" aws-peers --group "$GROUP" --region "$REGION" --chord-port "$CHORD_PORT" --http-port "$HTTP_PORT")
if [ -n "$ENDPOINT_URL" ]; then
	peers+=(--endpoint-url "$ENDPOINT_URL")
fi

JOIN=
deadline=$((SECONDS + PEER_WAIT))
while :; do
	if live=$("${peers[@]}" --exclude-self --self-ip "$PRIVATE_IP" --healthy); then
		JOIN=${live%%$'\n'*}
		if [ -n "$JOIN" ]; then
			log "joining the ring through $JOIN"
			break
		fi
		if all=$("${peers[@]}"); then
			oldest=${all%%$'\n'*}
			if [ "$oldest" = "$SELF" ]; then
				log "no live peer and this is the oldest in-service instance: starting a new ring"
				break
			fi
			log "no live peer yet; waiting for ${oldest:-an in-service instance} to start the ring"
		fi
	fi
	if [ "$SECONDS" -ge "$deadline" ]; then
		log "no live peer after ${PEER_WAIT}s; exiting for systemd to start again"
		exit 1
	fi
	sleep 5
done

args=(node --chord-addr "0.0.0.0:$CHORD_PORT" --http-addr "0.0.0.0:$HTTP_PORT" --advertise "$PRIVATE_IP" --data-dir "$DATA_DIR" --insecure)
if [ -n "$JOIN" ]; then
	args+=(--join "$JOIN")
fi
exec "$TIDE" "${args[@]}" ${NODE_FLAGS[@]+"${NODE_FLAGS[@]}"}
`)
	return b.String()
}

func unitFile(description, startPath string, restartSec int) string {
	return fmt.Sprintf(`[Unit]
Description=%s
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=%s
Restart=on-failure
RestartSec=%d
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`, description, startPath, restartSec)
}

// shq quotes s for bash as one word.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
