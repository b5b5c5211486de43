package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// group: one member of a classic consumer group (kgo.ConsumerGroup), manual
// commits, rebalances blocked between a poll and its commit. Lines:
//
//	{"ev":"start","pid":..}
//	{"ev":"assigned"|"revoked"|"lost","parts":[..]}
//	{"ev":"rec","p","o","k","v","h","ts"}       records of one poll, then
//	{"ev":"committed","offs":{"0":next,..}}    after a successful commit of that poll
//	{"ev":"commit_err","err":..}
//	{"ev":"closed"} / {"ev":"timeout"}
//
// Records are printed (and flushed) before their commit, so a member killed
// between the two may have printed records that another member gets again.
// Stops cleanly (commit, leave) when stdin reaches EOF or -run elapses.
func cmdGroup(args []string) {
	fs := flag.NewFlagSet("group", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "seed brokers")
	group := fs.String("group", "", "group id")
	topics := fs.String("topics", "", "comma-separated topics")
	maxPoll := fs.Int("max-poll", 50, "records per poll")
	sleep := fs.Duration("sleep", 0, "pause after each non-empty poll (slow consumer)")
	session := fs.Duration("session", 6*time.Second, "SessionTimeout")
	heartbeat := fs.Duration("heartbeat", time.Second, "HeartbeatInterval")
	balancer := fs.String("balancer", "cooperative-sticky", "cooperative-sticky|range|roundrobin|sticky")
	run := fs.Duration("run", 120*time.Second, "stop after this long (exit 3)")
	clientID := fs.String("client-id", "franz-interop-group", "client id")
	fs.Parse(args)
	if *group == "" || *topics == "" {
		fatalf("group: -group and -topics are required")
	}

	var bal kgo.GroupBalancer
	switch *balancer {
	case "cooperative-sticky":
		bal = kgo.CooperativeStickyBalancer()
	case "range":
		bal = kgo.RangeBalancer()
	case "roundrobin":
		bal = kgo.RoundRobinBalancer()
	case "sticky":
		bal = kgo.StickyBalancer()
	default:
		fatalf("unknown balancer %q", *balancer)
	}
	parts := func(m map[string][]int32) []int32 {
		var ps []int32
		for _, p := range m {
			ps = append(ps, p...)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		if ps == nil {
			ps = []int32{}
		}
		return ps
	}
	ev := func(name string) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			out.emit(map[string]any{"ev": name, "parts": parts(m), "t": time.Now().UnixMilli()})
			out.flush()
		}
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(splitList(*brokers)...),
		kgo.ClientID(*clientID),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(splitList(*topics)...),
		kgo.Balancers(bal),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(*session),
		kgo.HeartbeatInterval(*heartbeat),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.OnPartitionsAssigned(ev("assigned")),
		kgo.OnPartitionsRevoked(ev("revoked")),
		kgo.OnPartitionsLost(ev("lost")),
	)
	if err != nil {
		fatalf("kgo.NewClient: %v", err)
	}
	out.emit(map[string]any{"ev": "start", "pid": os.Getpid()})
	out.flush()

	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(stop)
	}()
	deadline := time.Now().Add(*run)

	commit := func() {
		unc := cl.UncommittedOffsets()
		if len(unc) == 0 {
			return
		}
		cctx, cancel := bg(30 * time.Second)
		defer cancel()
		var wg sync.WaitGroup
		wg.Add(1)
		cl.CommitOffsetsSync(cctx, unc, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			defer wg.Done()
			if err != nil {
				out.emit(map[string]any{"ev": "commit_err", "err": errInfo(err)})
				return
			}
			offs := map[string]int64{}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
						out.emit(map[string]any{"ev": "commit_err", "p": p.Partition, "err": errInfo(perr)})
						continue
					}
					offs[strconv.Itoa(int(p.Partition))] = unc[t.Topic][p.Partition].Offset
				}
			}
			out.emit(map[string]any{"ev": "committed", "offs": offs})
		})
		wg.Wait()
		out.flush()
	}

	exit := 0
	for polls := 0; ; polls++ {
		select {
		case <-stop:
			goto done
		default:
		}
		if time.Now().After(deadline) {
			out.emit(map[string]any{"ev": "timeout"})
			exit = 3
			goto done
		}
		if polls > 1_000_000 {
			fatalf("too many polls")
		}
		pctx, cancel := bg(time.Second)
		fetches := cl.PollRecords(pctx, *maxPoll)
		cancel()
		if fetches.IsClientClosed() {
			fatalf("client closed")
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
				continue
			}
			out.emit(map[string]any{"ev": "fetch_err", "p": fe.Partition, "err": errInfo(fe.Err)})
		}
		recs := fetches.Records()
		for _, r := range recs {
			out.emit(recordJSON("rec", r))
		}
		out.flush()
		if len(recs) > 0 {
			commit()
		}
		cl.AllowRebalance()
		if len(recs) > 0 && *sleep > 0 {
			time.Sleep(*sleep)
		}
	}
done:
	commit()
	cl.AllowRebalance()
	cl.Close() // leaves the group
	out.emit(map[string]any{"ev": "closed", "exit": exit})
	out.flush()
	os.Exit(exit)
}
