package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dmq-project/metadata/node"
	"golang.org/x/time/rate"
)

// raftLogger routes etcd raft's log to slog (component=raft): its info
// lines are elections and leadership, which an operator wants; debug stays
// debug. Fatal and Panic, which Raft calls only for broken invariants, log
// and panic: the node must not run on.
type raftLogger struct{ logger *slog.Logger }

func newRaftLogger(logger *slog.Logger) raftLogger {
	return raftLogger{logger: logger.With("component", "raft")}
}

func (l raftLogger) log(level slog.Level, msg string) {
	l.logger.Log(context.Background(), level, strings.TrimSpace(msg))
}

func (l raftLogger) Debug(v ...any) { l.log(slog.LevelDebug, fmt.Sprint(v...)) }
func (l raftLogger) Debugf(format string, v ...any) {
	l.log(slog.LevelDebug, fmt.Sprintf(format, v...))
}
func (l raftLogger) Info(v ...any)                 { l.log(slog.LevelInfo, fmt.Sprint(v...)) }
func (l raftLogger) Infof(format string, v ...any) { l.log(slog.LevelInfo, fmt.Sprintf(format, v...)) }
func (l raftLogger) Warning(v ...any)              { l.log(slog.LevelWarn, fmt.Sprint(v...)) }
func (l raftLogger) Warningf(format string, v ...any) {
	l.log(slog.LevelWarn, fmt.Sprintf(format, v...))
}
func (l raftLogger) Error(v ...any) { l.log(slog.LevelError, fmt.Sprint(v...)) }
func (l raftLogger) Errorf(format string, v ...any) {
	l.log(slog.LevelError, fmt.Sprintf(format, v...))
}
func (l raftLogger) Fatal(v ...any)                 { l.Panic(v...) }
func (l raftLogger) Fatalf(format string, v ...any) { l.Panicf(format, v...) }
func (l raftLogger) Panic(v ...any) {
	msg := fmt.Sprint(v...)
	l.log(slog.LevelError, msg)
	panic(msg)
}
func (l raftLogger) Panicf(format string, v ...any) { l.Panic(fmt.Sprintf(format, v...)) }

// eventLinesPerSecond bounds the lines of one kind of event (a burst of
// eventBurst): a failover that fences a thousand brokers costs a few
// dozen lines and a count of the rest.
const (
	eventLinesPerSecond = 10
	eventBurst          = 50
)

// eventLog logs the node's events with slog, each kind at its level and
// rate-limited; lines dropped by the limit are counted on the next line of
// their kind (suppressed=N).
type eventLog struct {
	logger *slog.Logger
	mu     sync.Mutex
	kinds  map[node.EventKind]*eventBudget
}

type eventBudget struct {
	limiter    *rate.Limiter
	suppressed int
}

func newEventLog(logger *slog.Logger) *eventLog {
	return &eventLog{logger: logger, kinds: map[node.EventKind]*eventBudget{}}
}

// eventLevel: what needs an operator's attention warns.
func eventLevel(kind node.EventKind) slog.Level {
	switch kind {
	case node.EventPeerUnreachable, node.EventBrokerFenced, node.EventPushFailing, node.EventRemoved,
		node.EventStrangerRefused:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// Event implements node.Events. It runs on the node's goroutine and never
// blocks on more than the log's writer.
func (l *eventLog) Event(e node.Event) {
	l.mu.Lock()
	budget, ok := l.kinds[e.Kind]
	if !ok {
		budget = &eventBudget{limiter: rate.NewLimiter(eventLinesPerSecond, eventBurst)}
		l.kinds[e.Kind] = budget
	}
	if !budget.limiter.AllowN(time.Now(), 1) {
		budget.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := budget.suppressed
	budget.suppressed = 0
	l.mu.Unlock()

	attrs := []slog.Attr{slog.Uint64("term", e.Term)}
	switch e.Kind {
	case node.EventLeaderChanged, node.EventBecameActive:
		attrs = append(attrs, slog.Uint64("leader", e.Leader))
	case node.EventPeerUnreachable, node.EventPeerBack, node.EventStrangerRefused:
		attrs = append(attrs, slog.Uint64("peer", e.Peer))
	case node.EventBrokerFenced, node.EventBrokerUnfenced:
		attrs = append(attrs, slog.Int("broker", int(e.Broker)), slog.Int64("broker_epoch", e.Epoch))
	case node.EventPushFailing, node.EventPushRecovered, node.EventRebalance, node.EventDrainReplanned:
		attrs = append(attrs, slog.Int("broker", int(e.Broker)))
	case node.EventMembershipChanged:
		attrs = append(attrs, slog.Uint64("controller", e.Peer), slog.Uint64("index", e.Index))
	case node.EventRemoved:
		attrs = append(attrs, slog.Uint64("index", e.Index))
	case node.EventSnapshotTaken, node.EventSnapshotInstalled:
		attrs = append(attrs, slog.Uint64("index", e.Index), slog.Int("bytes", e.Bytes))
	}
	if e.Detail != "" {
		attrs = append(attrs, slog.String("detail", e.Detail))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	l.logger.LogAttrs(context.Background(), eventLevel(e.Kind), e.Kind.String(), attrs...)
}

// bothEvents hands each event to the log and to the metrics.
type bothEvents [2]node.Events

func (b bothEvents) Event(e node.Event) {
	b[0].Event(e)
	b[1].Event(e)
}
