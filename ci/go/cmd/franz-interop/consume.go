package main

import (
	"context"
	"errors"
	"flag"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type recJSON struct {
	Ev string      `json:"ev,omitempty"`
	P  int32       `json:"p"`
	O  int64       `json:"o"`
	K  *string     `json:"k"`
	V  *string     `json:"v"`
	H  [][2]string `json:"h"`
	TS int64       `json:"ts"`
}

func recordJSON(ev string, r *kgo.Record) recJSON {
	j := recJSON{Ev: ev, P: r.Partition, O: r.Offset, TS: r.Timestamp.UnixMilli(), H: [][2]string{}}
	if r.Key != nil {
		k := string(r.Key)
		j.K = &k
	}
	if r.Value != nil {
		v := string(r.Value)
		j.V = &v
	}
	for _, h := range r.Headers {
		j.H = append(j.H, [2]string{h.Key, string(h.Value)})
	}
	return j
}

// consume: direct partition consumption (no group) of every partition of
// -topic from -from (start, or an offset) up to the end offsets listed (kadm)
// when it starts. One line per record {"p","o","k","v","h","ts"}, then
// {"done":true,"n":..,"ends":{"0":..}}.
func cmdConsume(args []string) {
	fs := flag.NewFlagSet("consume", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "seed brokers")
	topic := fs.String("topic", "", "topic")
	from := fs.Int64("from", -2, "start offset for every partition (-2: start)")
	timeout := fs.Duration("timeout", 60*time.Second, "overall deadline")
	fs.Parse(args)
	if *topic == "" {
		fatalf("consume: -topic is required")
	}
	ctx, cancel := bg(*timeout)
	defer cancel()

	acl, err := kgo.NewClient(kgo.SeedBrokers(splitList(*brokers)...), kgo.ClientID("franz-interop-admin"))
	if err != nil {
		fatalf("kgo.NewClient: %v", err)
	}
	adm := kadm.NewClient(acl)
	ends, err := adm.ListEndOffsets(ctx, *topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		fatalf("ListEndOffsets %s: %v", *topic, err)
	}
	acl.Close()

	end := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	want := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		end[o.Partition] = o.Offset
		if *from < 0 {
			parts[o.Partition] = kgo.NewOffset().AtStart()
		} else {
			parts[o.Partition] = kgo.NewOffset().At(*from)
		}
		want += o.Offset
	})
	if len(end) == 0 {
		fatalf("topic %s has no partitions", *topic)
	}

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(splitList(*brokers)...),
		kgo.ClientID("franz-interop-consume"),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{*topic: parts}),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()

	next := map[int32]int64{}
	for p := range end {
		next[p] = 0
		if *from >= 0 {
			next[p] = *from
		}
	}
	reached := func() bool {
		for p, e := range end {
			if next[p] < e {
				return false
			}
		}
		return true
	}
	n := int64(0)
	for polls := 0; !reached(); polls++ {
		if polls > 100000 {
			fatalf("too many polls")
		}
		fetches := cl.PollFetches(ctx)
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				out.emit(map[string]any{"timeout": true, "n": n, "next": next, "ends": end})
				out.flush()
				fatalf("consume timed out after %v: %d records", *timeout, n)
			}
			out.emit(map[string]any{"fetch_err": errInfo(fe.Err), "p": fe.Partition})
			out.flush()
			fatalf("fetch error %s/%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			out.emit(recordJSON("", r))
			next[r.Partition] = r.Offset + 1
			n++
		})
		if n > want+1000 {
			fatalf("more records than the end offsets allow: %d > %d", n, want)
		}
	}
	endsJ := map[string]int64{}
	for p, e := range end {
		endsJ[strconv.Itoa(int(p))] = e
	}
	out.emit(map[string]any{"done": true, "n": n, "ends": endsJ})
}
