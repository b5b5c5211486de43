// franz-interop: franz-go (kgo, kadm) test programs that ci/tests/test_franz_go.py
// runs against the real brook binary (or a real Apache Kafka, for comparison).
//
// Every subcommand prints JSON lines on stdout (one object per line) and leaves
// the checking to the Python test; diagnostics go to stderr. Every loop is
// bounded by a count and a deadline.
//
//	franz-interop produce  -brokers B -topic T -n N [-codec zstd] [-mode sync|async] ...
//	franz-interop consume  -brokers B -topic T [-timeout 60s]
//	franz-interop group    -brokers B -group G -topics T [-max-poll 20] ...
//	franz-interop admin    -brokers B -op topics|groups|offsets|unsupported ...
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// out is the JSON-lines writer shared by all subcommands.
var out = &jsonOut{w: bufio.NewWriterSize(os.Stdout, 1<<16)}

type jsonOut struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *jsonOut) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fatalf("json: %v", err)
	}
	o.mu.Lock()
	o.w.Write(b)
	o.w.WriteByte('\n')
	o.mu.Unlock()
}

func (o *jsonOut) flush() {
	o.mu.Lock()
	o.w.Flush()
	o.mu.Unlock()
}

func fatalf(format string, args ...any) {
	out.flush()
	fmt.Fprintf(os.Stderr, "franz-interop: "+format+"\n", args...)
	os.Exit(1)
}

// errInfo describes an error for the Python side: the text, and for a Kafka
// protocol error its code and name (e.g. 36 TOPIC_ALREADY_EXISTS).
type errJSON struct {
	Msg  string `json:"msg"`
	Code int16  `json:"code,omitempty"`
	Name string `json:"name,omitempty"`
}

func errInfo(err error) *errJSON {
	if err == nil {
		return nil
	}
	e := &errJSON{Msg: err.Error()}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		e.Code = ke.Code
		e.Name = ke.Message
	}
	return e
}

// payload is util.payload: deterministic, compressible, contains i.
func payload(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d:", i)
	for j := 0; j < 1+i%9; j++ {
		fmt.Fprintf(&b, "%08d", i)
	}
	return b.String()
}

func splitList(s string) []string {
	var r []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			r = append(r, x)
		}
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: franz-interop produce|consume|group|admin [flags]")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "produce":
		cmdProduce(args)
	case "consume":
		cmdConsume(args)
	case "group":
		cmdGroup(args)
	case "admin":
		cmdAdmin(args)
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	out.flush()
}

// bg returns a context bounded by d.
func bg(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
