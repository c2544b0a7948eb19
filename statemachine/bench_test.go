package statemachine

import (
	"fmt"
	"runtime"
	"testing"

	metadatav1 "github.com/dmq-project/metadata/gen/dmq/metadata/v1"
	"google.golang.org/protobuf/proto"
)

// BenchmarkApply measures records applied per second, decoding included,
// for the simple records that dominate a live cluster's log.
func BenchmarkApply(b *testing.B) {
	encode := func(r *metadatav1.Record) []byte {
		data, err := proto.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	b.Run("fence-unfence", func(b *testing.B) {
		sm := New()
		for id := int32(1); id <= 3; id++ {
			sm.Apply(sm.AppliedIndex()+1, registerRecord(id, ""))
		}
		sm.Apply(sm.AppliedIndex()+1, createTopicRecord("t", 3, 3, 0, 1))
		records := [][]byte{encode(fenceRecord(1, 0)), encode(unfenceRecord(1, 0))}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r := sm.ApplyEntry(sm.AppliedIndex()+1, records[i%2]); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("register-with-request-id", func(b *testing.B) {
		sm := New()
		sm.Apply(1, openSessionRecord("bench", 60_000))
		records := make([][]byte, 1024)
		for i := range records {
			records[i] = encode(withRequestID(registerRecord(int32(i+1), "r1"), 1, uint64(i+1)))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			// Past the first 1024 these would be stale sequences, so re-key
			// them to keep every apply a first apply.
			data := records[i%len(records)]
			if i >= len(records) {
				data = encode(withRequestID(registerRecord(int32(i%len(records)+1), "r1"), 1, uint64(i+1)))
			}
			if r := sm.ApplyEntry(sm.AppliedIndex()+1, data); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("create-topic-1-partition", func(b *testing.B) {
		sm := New()
		for id := int32(1); id <= 9; id++ {
			sm.Apply(sm.AppliedIndex()+1, registerRecord(id, fmt.Sprintf("r%d", id%3)))
		}
		records := make([][]byte, b.N)
		for i := range records {
			records[i] = encode(createTopicRecord(fmt.Sprintf("topic-%d", i), 1, 3, uint32(i), i+1))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r := sm.ApplyEntry(sm.AppliedIndex()+1, records[i]); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})
	// A batch of 1,000 one-partition topics in one record: the apply part
	// of CreateTopics, per topic.
	b.Run("create-topics-batch-of-1000", func(b *testing.B) {
		sm := New()
		for id := int32(1); id <= 9; id++ {
			sm.Apply(sm.AppliedIndex()+1, registerRecord(id, fmt.Sprintf("r%d", id%3)))
		}
		const batch = 1000
		records := make([][]byte, (b.N+batch-1)/batch)
		for i := range records {
			items := make([]*metadatav1.CreateTopicRecord, batch)
			for j := range items {
				n := i*batch + j
				items[j] = batchItem(fmt.Sprintf("topic-%d", n), 1, 3, n+1)
			}
			records[i] = encode(createTopicsRecord(false, items...))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i += batch {
			if r := sm.ApplyEntry(sm.AppliedIndex()+1, records[i/batch]); r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "topics/s")
	})
}

// bigState builds topics×partitionsPerTopic partitions, replication factor 3,
// on 30 brokers in 3 racks.
func bigState(tb testing.TB, topics, partitionsPerTopic int) *StateMachine {
	sm := New()
	for id := int32(1); id <= 30; id++ {
		sm.Apply(sm.AppliedIndex()+1, registerRecord(id, fmt.Sprintf("rack-%d", id%3)))
	}
	for i := 0; i < topics; i++ {
		r := sm.Apply(sm.AppliedIndex()+1, createTopicRecord(fmt.Sprintf("topic-%06d", i), int32(partitionsPerTopic), 3, uint32(i*7), i+1))
		if r.Err != nil {
			tb.Fatal(r.Err)
		}
	}
	return sm
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkSnapshot measures snapshot encoding and restore at 100k and 1M
// partitions, and the heap a restored state holds per partition.
func BenchmarkSnapshot(b *testing.B) {
	for _, size := range []struct {
		name                       string
		topics, partitionsPerTopic int
	}{
		{"100k-partitions", 100, 1000},
		{"1M-partitions", 1000, 1000},
	} {
		sm := bigState(b, size.topics, size.partitionsPerTopic)
		partitions := sm.PartitionCount()
		data := sm.Snapshot()
		b.Run("save-"+size.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				data = sm.Snapshot()
			}
			b.ReportMetric(float64(len(data)), "snapshot-bytes")
		})
		sm = nil
		b.Run("restore-"+size.name, func(b *testing.B) {
			var heap uint64
			for i := 0; i < b.N; i++ {
				base := heapInUse()
				restored, err := Restore(data)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				heap = heapInUse() - base
				runtime.KeepAlive(restored)
				b.StartTimer()
			}
			b.ReportMetric(float64(heap)/float64(partitions), "heap-B/partition")
		})
	}
}

// BenchmarkFence measures fencing a broker that leads 10% of the
// partitions (one of ten brokers): every partition it led elects a new
// leader, and every ISR it was in shrinks, in the one record.
func BenchmarkFence(b *testing.B) {
	for _, size := range []struct {
		name                       string
		topics, partitionsPerTopic int
	}{
		{"100k-partitions", 100, 1000},
		{"1M-partitions", 1000, 1000},
	} {
		b.Run(size.name, func(b *testing.B) {
			// Ten brokers: each leads a tenth of the partitions.
			sm := New()
			for id := int32(1); id <= 10; id++ {
				sm.Apply(sm.AppliedIndex()+1, registerRecord(id, fmt.Sprintf("rack-%d", id%3)))
			}
			for i := 0; i < size.topics; i++ {
				if r := sm.Apply(sm.AppliedIndex()+1, createTopicRecord(fmt.Sprintf("topic-%06d", i), int32(size.partitionsPerTopic), 3, uint32(i*7), i+1)); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
			led := 0
			for _, name := range sm.sortedTopicNames() {
				for _, p := range sm.topics[name].partitions {
					if p.leader == 1 {
						led++
					}
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				restored, err := Restore(sm.Snapshot())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if r := restored.Apply(restored.AppliedIndex()+1, fenceRecord(1, 0)); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
			b.ReportMetric(float64(led)/float64(sm.PartitionCount())*100, "%-led")
		})
	}
}

// BenchmarkRegisterInBigCluster measures registering a broker when the
// state holds 100k partitions and none of them is offline: the offline
// index keeps it from scanning them all.
func BenchmarkRegisterInBigCluster(b *testing.B) {
	sm := bigState(b, 100, 1000)
	rec := registerRecord(31, "rack-1")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec.GetRegisterBroker().IncarnationId = fmt.Sprint("inc-", i)
		rec.GetRegisterBroker().BrokerId = int32(31 + i)
		if r := sm.Apply(sm.AppliedIndex()+1, rec); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
}

// BenchmarkPlanInputs is what the node goroutine does before a balancing
// plan goes to its worker (a million partitions in 10,000 topics).
func BenchmarkPlanInputs(b *testing.B) {
	sm := bigState(b, 10_000, 100)
	b.ResetTimer()
	for b.Loop() {
		if in := sm.PlanInputs(); len(in.Refs) != 1_000_000 || len(in.IDs) != 3_000_000 {
			b.Fatalf("%d partitions, %d replicas", len(in.Refs), len(in.IDs))
		}
	}
}
