package sim

import (
	"container/heap"
	"time"
)

// event is one thing that happens at a virtual time. Events at the same
// time run in the order they were scheduled (seq), so a run is a function
// of its seed alone.
type event struct {
	at   time.Duration
	seq  uint64
	kind eventKind
	// a and b identify the event's subjects (node, service, client) for
	// the trace and its hash.
	a, b uint64
	run  func()
}

type eventKind uint8

const (
	evDeliver eventKind = iota + 1
	evTick
	evRPC
	evRPCReply
	evPush
	evPushReply
	evServiceBeat
	evClientStart
	evClientTimeout
	evNemesis
	evRestart
	evResume
	evHeal
	evSnapshotReport
	evWork
)

var eventNames = map[eventKind]string{
	evDeliver: "deliver", evTick: "tick", evRPC: "rpc", evRPCReply: "rpc-reply", evPush: "push",
	evPushReply: "push-reply", evServiceBeat: "service-beat", evClientStart: "client-start",
	evClientTimeout: "client-timeout", evNemesis: "nemesis", evRestart: "restart", evResume: "resume",
	evHeal: "heal", evSnapshotReport: "snapshot-report", evWork: "work",
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

func (s *Sim) schedule(after time.Duration, kind eventKind, a, b uint64, run func()) {
	s.seq++
	heap.Push(&s.queue, &event{at: s.now + after, seq: s.seq, kind: kind, a: a, b: b, run: run})
}
