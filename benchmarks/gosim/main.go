// A loopback OpenAI-compatible chat server that spends almost no CPU: fanout_server.py measures
// the fan-out against it, beside the Python sim server, to tell the client's overhead from the
// server's. It answers every POST with one fixed completion after --latency-ms, prints its base
// URL on one line, and listens on 127.0.0.1 only.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	latencyMs := flag.Float64("latency-ms", 0, "each reply's latency")
	flag.Parse()
	latency := time.Duration(*latencyMs * float64(time.Millisecond))
	answer := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req struct {
			Model string `json:"model"`
		}
		if err != nil || json.Unmarshal(body, &req) != nil {
			http.Error(w, `{"error":{"message":"unreadable body"}}`, http.StatusBadRequest)
			return
		}
		if latency > 0 {
			time.Sleep(latency)
		}
		model, _ := json.Marshal(req.Model)
		w.Header().Set("content-type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-go","object":"chat.completion","created":1,"model":%s,`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris."},`+
			`"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":8,"total_tokens":15}}`, model)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("http://%s/v1\n", ln.Addr())
	os.Stdout.Sync()
	if err := http.Serve(ln, http.HandlerFunc(answer)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
