package main

import (
	"flag"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// produce: records k{start}..k{start+n-1} with value payload(i) and headers
// h-idx=i, h-key=k{i}, h-empty="" (unless -no-headers). Prints one line per
// record, {"i":i,"k":"k5","p":2,"o":17} or {"i":i,"k":..,"err":{..}}, then
// {"done":true,"acked":..,"failed":..,"ms":..,"pid":..,"epoch":..}.
func cmdProduce(args []string) {
	fs := flag.NewFlagSet("produce", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "seed brokers")
	topic := fs.String("topic", "", "topic")
	n := fs.Int("n", 1000, "records")
	start := fs.Int("start", 0, "first index")
	codec := fs.String("codec", "none", "none|gzip|snappy|lz4|zstd")
	mode := fs.String("mode", "async", "async (Produce + Flush) or sync (ProduceSync per chunk)")
	chunk := fs.Int("chunk", 1, "records per ProduceSync call in sync mode")
	acks := fs.String("acks", "all", "all|leader|none")
	idem := fs.Bool("idempotent", true, "idempotent producer (franz-go's default; needs acks=all)")
	partition := fs.Int("partition", -1, "produce every record to this partition (-1: franz-go's default partitioner)")
	tsBase := fs.Int64("ts-base", 0, "if >0, record i gets timestamp ts-base + (i-start)*ts-step ms")
	tsStep := fs.Int64("ts-step", 1, "timestamp step (ms)")
	noHeaders := fs.Bool("no-headers", false, "send no headers")
	linger := fs.Duration("linger", 5*time.Millisecond, "ProducerLinger")
	timeout := fs.Duration("timeout", 90*time.Second, "overall deadline")
	fs.Parse(args)
	if *topic == "" {
		fatalf("produce: -topic is required")
	}

	opts := []kgo.Opt{
		kgo.SeedBrokers(splitList(*brokers)...),
		kgo.ClientID("franz-interop-produce"),
		kgo.DefaultProduceTopic(*topic),
		kgo.ProducerLinger(*linger),
		kgo.AllowAutoTopicCreation(),
	}
	if *tsBase == 0 {
		// kgo measures the delivery timeout from the record's timestamp, so it
		// is left unbounded (the -timeout context still bounds the run) for
		// records with explicit, older timestamps.
		opts = append(opts, kgo.RecordDeliveryTimeout(*timeout))
	}
	switch *codec {
	case "none":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	default:
		fatalf("unknown codec %q", *codec)
	}
	switch *acks {
	case "all":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "leader":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case "none":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	default:
		fatalf("unknown acks %q", *acks)
	}
	if !*idem {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if *partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()
	ctx, cancel := bg(*timeout)
	defer cancel()

	mk := func(i int) *kgo.Record {
		k := fmt.Sprintf("k%d", i)
		r := &kgo.Record{Key: []byte(k), Value: []byte(payload(i))}
		if !*noHeaders {
			r.Headers = []kgo.RecordHeader{
				{Key: "h-idx", Value: []byte(strconv.Itoa(i))},
				{Key: "h-key", Value: []byte(k)},
				{Key: "h-empty", Value: []byte{}},
			}
		}
		if *partition >= 0 {
			r.Partition = int32(*partition)
		}
		if *tsBase > 0 {
			r.Timestamp = time.UnixMilli(*tsBase + int64(i-*start)**tsStep)
		}
		return r
	}

	type res struct {
		I   int      `json:"i"`
		K   string   `json:"k"`
		P   int32    `json:"p"`
		O   int64    `json:"o"`
		Err *errJSON `json:"err,omitempty"`
	}
	var mu sync.Mutex
	acked, failed := 0, 0
	report := func(i int, r *kgo.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			out.emit(res{I: i, K: string(r.Key), P: r.Partition, O: -1, Err: errInfo(err)})
			return
		}
		acked++
		out.emit(res{I: i, K: string(r.Key), P: r.Partition, O: r.Offset})
	}

	t0 := time.Now()
	switch *mode {
	case "async":
		for i := *start; i < *start+*n; i++ {
			i := i
			cl.Produce(ctx, mk(i), func(r *kgo.Record, err error) { report(i, r, err) })
		}
		if err := cl.Flush(ctx); err != nil {
			fatalf("flush: %v", err)
		}
	case "sync":
		if *chunk < 1 {
			*chunk = 1
		}
		for i := *start; i < *start+*n; i += *chunk {
			var rs []*kgo.Record
			for j := i; j < i+*chunk && j < *start+*n; j++ {
				rs = append(rs, mk(j))
			}
			results := cl.ProduceSync(ctx, rs...)
			for j, pr := range results {
				report(i+j, pr.Record, pr.Err)
			}
		}
	default:
		fatalf("unknown mode %q", *mode)
	}
	elapsed := time.Since(t0)
	pid, epoch, perr := int64(-1), int16(-1), error(nil)
	if *idem {
		pctx, pcancel := bg(10 * time.Second)
		pid, epoch, perr = cl.ProducerID(pctx)
		pcancel()
	}
	out.emit(map[string]any{"done": true, "acked": acked, "failed": failed, "ms": ms(elapsed),
		"pid": pid, "epoch": epoch, "pid_err": errInfo(perr)})
}
