package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// admin -op topics|topics-create|groups|offsets|deletegroup|apiversions|call: kadm calls; prints one JSON
// object with what each call returned (errors as {"msg","code","name"}).
func cmdAdmin(args []string) {
	fs := flag.NewFlagSet("admin", flag.ExitOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "seed brokers")
	op := fs.String("op", "", "topics|topics-create|groups|offsets|deletegroup|apiversions|call")
	topic := fs.String("topic", "", "topic")
	partitions := fs.Int("partitions", 3, "partitions for -op topics")
	group := fs.String("group", "", "group")
	at := fs.String("at", "", "offsets: comma-separated millis for ListOffsetsAfterMilli")
	commit := fs.String("commit", "", "offsets: p:offset,... to commit for -group (metadata m<p>)")
	call := fs.String("call", "", "call: createpartitions|describeconfigs|alterconfigs|deleterecords|deleteoffsets|describeproducers|txn")
	timeout := fs.Duration("timeout", 60*time.Second, "overall deadline")
	fs.Parse(args)

	ctx, cancel := bg(*timeout)
	defer cancel()
	// MetadataMinAge: kadm serves metadata from the client's cache for this
	// long (default 5s), which would hide a delete from ListTopics.
	cl, err := kgo.NewClient(kgo.SeedBrokers(splitList(*brokers)...), kgo.ClientID("franz-interop-admin"),
		kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		fatalf("kgo.NewClient: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	adm.SetTimeoutMillis(15000)

	var res map[string]any
	opStart := time.Now()
	switch *op {
	case "topics":
		res = adminTopics(ctx, adm, *topic, int32(*partitions))
	case "topics-create":
		res = adminCreate(ctx, adm, *topic, int32(*partitions))
	case "groups":
		res = adminGroups(ctx, adm, *group, *topic)
	case "offsets":
		res = adminOffsets(ctx, adm, *topic, *group, *at, *commit)
	case "apiversions":
		res = adminApiVersions(ctx, adm)
	case "deletegroup":
		dr, err := adm.DeleteGroup(ctx, *group)
		res = map[string]any{"err": errInfo(err), "group_err": errInfo(dr.Err)}
		lg, lerr := adm.ListGroups(ctx)
		res["listed_after"] = lg.Groups()
		res["list_err"] = errInfo(lerr)
	case "call":
		res = adminCall(ctx, adm, *brokers, *call, *topic, *group)
	default:
		fatalf("unknown -op %q", *op)
	}
	res["op_ms"] = ms(time.Since(opStart))
	out.emit(res)
}

func topicJSON(t kadm.TopicDetail) map[string]any {
	parts := map[string]any{}
	for p, d := range t.Partitions {
		parts[strconv.Itoa(int(p))] = map[string]any{"leader": d.Leader, "replicas": d.Replicas, "isr": d.ISR, "err": errInfo(d.Err)}
	}
	return map[string]any{"partitions": parts, "internal": t.IsInternal, "id": t.ID.String(), "err": errInfo(t.Err)}
}

// listAll lists all topics (no topic names in the request, so nothing is auto-created).
func listAll(ctx context.Context, adm *kadm.Client) (kadm.TopicDetails, error) {
	return adm.ListTopics(ctx)
}

// adminCreate creates one topic and waits (bounded) until Metadata lists all
// its partitions with a leader.
func adminCreate(ctx context.Context, adm *kadm.Client, topic string, partitions int32) map[string]any {
	cr, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	r := map[string]any{"err": errInfo(err), "topic_err": errInfo(cr.Err), "partitions": cr.NumPartitions}
	if err != nil || cr.Err != nil {
		return r
	}
	for i := 0; i < 100; i++ {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if td, ok := md.Topics[topic]; ok && td.Err == nil && len(td.Partitions) == int(partitions) {
				r["in_metadata"] = true
				return r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r["in_metadata"] = false
	return r
}

func adminTopics(ctx context.Context, adm *kadm.Client, topic string, partitions int32) map[string]any {
	r := map[string]any{}
	t0 := time.Now()
	cr, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	r["create"] = map[string]any{"err": errInfo(err), "topic_err": errInfo(cr.Err), "partitions": cr.NumPartitions,
		"rf": cr.ReplicationFactor, "ms": ms(time.Since(t0))}

	cr2, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	r["create_again"] = map[string]any{"err": errInfo(err), "topic_err": errInfo(cr2.Err)}

	// the new topic in ListTopics (metadata may lag the create briefly)
	var listed map[string]any
	for i := 0; i < 100; i++ {
		tds, err := listAll(ctx, adm)
		if err != nil {
			listed = map[string]any{"err": errInfo(err)}
			break
		}
		if td, ok := tds[topic]; ok && len(td.Partitions) == int(partitions) {
			listed = topicJSON(td)
			break
		}
		time.Sleep(150 * time.Millisecond)
	}
	r["listed"] = listed
	r["create_to_listed_ms"] = ms(time.Since(t0))

	brokers, err := adm.ListBrokers(ctx)
	var bl []map[string]any
	for _, b := range brokers {
		bl = append(bl, map[string]any{"node": b.NodeID, "host": b.Host, "port": b.Port})
	}
	r["brokers"] = map[string]any{"err": errInfo(err), "list": bl}

	md, err := adm.Metadata(ctx, topic)
	r["metadata"] = map[string]any{"err": errInfo(err), "controller": md.Controller, "cluster": md.Cluster,
		"topic": topicJSON(md.Topics[topic])}

	tDel := time.Now()
	dr, err := adm.DeleteTopic(ctx, topic)
	r["delete"] = map[string]any{"err": errInfo(err), "topic_err": errInfo(dr.Err)}
	gone := false
	for i := 0; i < 100 && !gone; i++ {
		tds, err := listAll(ctx, adm)
		if err == nil {
			_, present := tds[topic]
			gone = !present
		}
		if !gone {
			time.Sleep(150 * time.Millisecond)
		}
	}
	r["gone_after_delete"] = gone
	r["delete_to_gone_ms"] = ms(time.Since(tDel))

	missing := topic + "-missing"
	dr2, err := adm.DeleteTopic(ctx, missing)
	r["delete_missing"] = map[string]any{"err": errInfo(err), "topic_err": errInfo(dr2.Err)}

	// several topics in one CreateTopics, then one DeleteTopics
	many := []string{topic + "-a", topic + "-b", topic + "-c"}
	crs, err := adm.CreateTopics(ctx, 2, 1, nil, many...)
	cm := map[string]any{"err": errInfo(err)}
	for _, c := range crs {
		cm[c.Topic] = map[string]any{"err": errInfo(c.Err), "partitions": c.NumPartitions}
	}
	r["create_many"] = cm
	drs, err := adm.DeleteTopics(ctx, many...)
	dm := map[string]any{"err": errInfo(err)}
	for _, d := range drs {
		dm[d.Topic] = map[string]any{"err": errInfo(d.Err)}
	}
	r["delete_many"] = dm
	return r
}

func assignedJSON(m kadm.DescribedGroupMember) map[string][]int32 {
	a := map[string][]int32{}
	if c, ok := m.Assigned.AsConsumer(); ok {
		for _, t := range c.Topics {
			ps := append([]int32(nil), t.Partitions...)
			sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
			a[t.Topic] = ps
		}
	}
	return a
}

func adminGroups(ctx context.Context, adm *kadm.Client, group, topic string) map[string]any {
	r := map[string]any{}
	lg, err := adm.ListGroups(ctx)
	names := lg.Groups()
	if names == nil {
		names = []string{}
	}
	l := map[string]any{"err": errInfo(err), "groups": names}
	if g, ok := lg[group]; ok {
		l["group"] = map[string]any{"state": g.State, "protocol_type": g.ProtocolType, "coordinator": g.Coordinator}
	}
	r["list"] = l

	dg, err := adm.DescribeGroups(ctx, group)
	d := map[string]any{"err": errInfo(err)}
	if g, ok := dg[group]; ok {
		var members []map[string]any
		for _, m := range g.Members {
			var join []string
			if c, ok := m.Join.AsConsumer(); ok {
				join = c.Topics
			}
			members = append(members, map[string]any{"member_id": m.MemberID, "client_id": m.ClientID,
				"client_host": m.ClientHost, "join_topics": join, "assigned": assignedJSON(m)})
		}
		d["group"] = map[string]any{"state": g.State, "protocol_type": g.ProtocolType, "protocol": g.Protocol,
			"coordinator": g.Coordinator.NodeID, "members": members, "err": errInfo(g.Err)}
	}
	r["describe"] = d

	fo, err := adm.FetchOffsets(ctx, group)
	f := map[string]any{"err": errInfo(err)}
	offs := map[string]any{}
	fo.Each(func(o kadm.OffsetResponse) {
		if topic == "" || o.Topic == topic {
			offs[strconv.Itoa(int(o.Partition))] = map[string]any{"at": o.At, "metadata": o.Metadata, "err": errInfo(o.Err)}
		}
	})
	f["offsets"] = offs
	r["fetch"] = f

	lag, err := adm.Lag(ctx, group)
	lm := map[string]any{"err": errInfo(err)}
	if gl, ok := lag[group]; ok {
		per := map[string]any{}
		for _, ps := range gl.Lag {
			for p, ml := range ps {
				if topic != "" && ml.Topic != topic {
					continue
				}
				per[strconv.Itoa(int(p))] = map[string]any{"lag": ml.Lag, "commit": ml.Commit.At, "end": ml.End.Offset}
			}
		}
		lm["partitions"] = per
		lm["total"] = gl.Lag.Total()
		lm["state"] = gl.State
	}
	r["lag"] = lm
	return r
}

func listedJSON(lo kadm.ListedOffsets, err error) map[string]any {
	m := map[string]any{"err": errInfo(err)}
	ps := map[string]any{}
	lo.Each(func(o kadm.ListedOffset) {
		ps[strconv.Itoa(int(o.Partition))] = map[string]any{"offset": o.Offset, "ts": o.Timestamp, "err": errInfo(o.Err)}
	})
	m["partitions"] = ps
	return m
}

func adminOffsets(ctx context.Context, adm *kadm.Client, topic, group, at, commit string) map[string]any {
	r := map[string]any{}
	so, err := adm.ListStartOffsets(ctx, topic)
	r["start"] = listedJSON(so, err)
	eo, err := adm.ListEndOffsets(ctx, topic)
	r["end"] = listedJSON(eo, err)
	mo, err := adm.ListMaxTimestampOffsets(ctx, topic)
	r["max_ts"] = listedJSON(mo, err)
	after := map[string]any{}
	for _, s := range splitList(at) {
		milli, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil {
			fatalf("bad -at %q", s)
		}
		lo, err := adm.ListOffsetsAfterMilli(ctx, milli, topic)
		after[s] = listedJSON(lo, err)
	}
	r["after"] = after

	if group != "" && commit != "" {
		os := kadm.Offsets{}
		for _, pc := range splitList(commit) {
			var p int32
			var o int64
			if _, err := fmt.Sscanf(pc, "%d:%d", &p, &o); err != nil {
				fatalf("bad -commit %q", pc)
			}
			os.Add(kadm.Offset{Topic: topic, Partition: p, At: o, LeaderEpoch: -1, Metadata: "m" + strconv.Itoa(int(p))})
		}
		cr, err := adm.CommitOffsets(ctx, group, os)
		cm := map[string]any{"err": errInfo(err)}
		ps := map[string]any{}
		cr.Each(func(o kadm.OffsetResponse) {
			ps[strconv.Itoa(int(o.Partition))] = map[string]any{"at": o.At, "err": errInfo(o.Err)}
		})
		cm["partitions"] = ps
		r["commit"] = cm

		fo, err := adm.FetchOffsets(ctx, group)
		fm := map[string]any{"err": errInfo(err)}
		fps := map[string]any{}
		fo.Each(func(o kadm.OffsetResponse) {
			if o.Topic == topic {
				fps[strconv.Itoa(int(o.Partition))] = map[string]any{"at": o.At, "metadata": o.Metadata, "err": errInfo(o.Err)}
			}
		})
		fm["partitions"] = fps
		r["fetch"] = fm

		fot, err := adm.FetchOffsetsForTopics(ctx, group, topic)
		ft := map[string]any{"err": errInfo(err)}
		ftps := map[string]any{}
		fot.Each(func(o kadm.OffsetResponse) {
			if o.Topic == topic {
				ftps[strconv.Itoa(int(o.Partition))] = map[string]any{"at": o.At, "err": errInfo(o.Err)}
			}
		})
		ft["partitions"] = ftps
		r["fetch_for_topics"] = ft
	}
	return r
}

// adminCall makes one call of an API Brook may not implement and reports the
// error and how long it took (it must fail fast, not hang), and what it did.
func adminCall(ctx context.Context, adm *kadm.Client, brokers, call, topic, group string) map[string]any {
	t0 := time.Now()
	var err error
	r := map[string]any{"call": call}
	switch call {
	case "createpartitions":
		var rs kadm.CreatePartitionsResponses
		rs, err = adm.CreatePartitions(ctx, 2, topic)
		if err == nil {
			err = rs.Error()
		}
		if err == nil {
			md, merr := adm.Metadata(ctx, topic)
			r["metadata_err"] = errInfo(merr)
			r["partitions_after"] = len(md.Topics[topic].Partitions)
		}
	case "shrinkpartitions":
		var rs kadm.CreatePartitionsResponses
		rs, err = adm.UpdatePartitions(ctx, 1, topic)
		if err == nil {
			err = rs.Error()
		}
	case "createpartitions-missing":
		var rs kadm.CreatePartitionsResponses
		rs, err = adm.UpdatePartitions(ctx, 3, topic+"-missing") // sent as is, no metadata lookup first
		if err == nil {
			err = rs.Error()
		}
	case "describeconfigs-missing":
		var rs kadm.ResourceConfigs
		rs, err = adm.DescribeTopicConfigs(ctx, topic+"-missing")
		if err == nil {
			for _, c := range rs {
				if c.Err != nil {
					err = c.Err
					break
				}
			}
		}
	case "describeconfigs":
		var rs kadm.ResourceConfigs
		rs, err = adm.DescribeTopicConfigs(ctx, topic)
		if err == nil {
			for _, c := range rs {
				if c.Err != nil {
					err = c.Err
					break
				}
			}
			if err == nil {
				cfg := map[string]any{}
				for _, rc := range rs {
					for _, c := range rc.Configs {
						v := "<null>"
						if c.Value != nil {
							v = *c.Value
						}
						cfg[c.Key] = map[string]any{"value": v, "source": c.Source.String(), "sensitive": c.Sensitive}
					}
				}
				r["configs"] = cfg
			}
		}
	case "alterconfigs":
		v := "3600000"
		var rs kadm.AlterConfigsResponses
		rs, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v}}, topic)
		if err == nil {
			for _, c := range rs {
				if c.Err != nil {
					err = c.Err
					break
				}
			}
		}
	case "deleterecords":
		os := kadm.Offsets{}
		os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1})
		var rs kadm.DeleteRecordsResponses
		rs, err = adm.DeleteRecords(ctx, os)
		if err == nil {
			err = rs.Error()
		}
	case "deleteoffsets":
		var rs kadm.DeleteOffsetsResponses
		rs, err = adm.DeleteOffsets(ctx, group, kadm.TopicsSet{topic: {0: {}}})
		if err == nil {
			err = rs.Error()
		}
	case "describeproducers":
		var rs kadm.DescribedProducersTopics
		rs, err = adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}}})
		if err == nil {
			rs.EachPartition(func(p kadm.DescribedProducersPartition) {
				if p.Err != nil && err == nil {
					err = p.Err
				}
			})
		}
	case "txn":
		err = txnAttempt(ctx, brokers, topic, r)
	default:
		fatalf("unknown -call %q", call)
	}
	r["err"] = errInfo(err)
	r["ms"] = ms(time.Since(t0))
	return r
}

// txnAttempt runs one transaction with kgo.TransactionalID; r gets the step
// that failed.
func txnAttempt(ctx context.Context, brokers, topic string, r map[string]any) error {
	txid := fmt.Sprintf("franz-interop-tx-%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(splitList(brokers)...),
		kgo.ClientID("franz-interop-txn"),
		kgo.TransactionalID(txid),
		kgo.TransactionTimeout(10*time.Second),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordDeliveryTimeout(45*time.Second),
	)
	if err != nil {
		r["step"] = "new_client"
		return err
	}
	defer func() {
		done := make(chan struct{})
		t0 := time.Now()
		go func() { cl.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
		}
		r["close_ms"] = ms(time.Since(t0))
	}()
	if err := cl.BeginTransaction(); err != nil {
		r["step"] = "begin"
		return err
	}
	res := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("tx-k"), Value: []byte("tx-v")})
	if err := res.FirstErr(); err != nil {
		r["step"] = "produce"
		// abort what was begun, bounded
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if aerr := cl.AbortBufferedRecords(actx); aerr != nil {
			r["abort_buffered_err"] = errInfo(aerr)
		}
		if eerr := cl.EndTransaction(actx, kgo.TryAbort); eerr != nil {
			r["abort_err"] = errInfo(eerr)
		}
		return err
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		r["step"] = "commit"
		return err
	}
	r["step"] = "committed"
	return nil
}

// adminApiVersions lists the API keys (names) the broker advertises.
func adminApiVersions(ctx context.Context, adm *kadm.Client) map[string]any {
	vs, err := adm.ApiVersions(ctx)
	keys := map[string][2]int16{}
	vs.Each(func(b kadm.BrokerApiVersions) {
		b.EachKeySorted(func(key, min, max int16) {
			name := kmsg.NameForKey(key)
			keys[name] = [2]int16{min, max}
		})
	})
	return map[string]any{"err": errInfo(err), "keys": keys}
}
