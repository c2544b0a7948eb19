package main

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// linkProxy forwards one direction of the peer traffic between two
// controllers (from's connections to to's listener). Blackholed, it keeps
// every connection open but forwards nothing, as a partitioned network does:
// the transport has to notice by itself (HTTP/2 pings), not by a reset.
type linkProxy struct {
	listener  net.Listener
	target    string
	blackhole atomic.Bool
	// delay holds every chunk back this long (a slow link), in order.
	delay atomic.Int64
	mu    sync.Mutex
	conns []net.Conn
}

// chunk is bytes read from one side, due on the other at a time.
type chunk struct {
	data []byte
	due  time.Time
}

func newLinkProxy(t *testing.T, target string) *linkProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &linkProxy{listener: l, target: target}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *linkProxy) addr() string { return p.listener.Addr().String() }

func (p *linkProxy) accept() {
	for {
		in, err := p.listener.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

// pipe copies src to dst, dropping bytes while blackholed and holding
// them back by the link's delay.
func (p *linkProxy) pipe(src, dst net.Conn) {
	chunks := make(chan chunk, 1024)
	go func() {
		defer func() { _ = dst.Close() }()
		for c := range chunks {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				_ = src.Close()
				for range chunks {
				}
				return
			}
		}
	}()
	defer close(chunks)
	defer func() { _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.blackhole.Load() {
			chunks <- chunk{data: bytes.Clone(buf[:n]), due: time.Now().Add(time.Duration(p.delay.Load()))}
		}
		if err != nil {
			return
		}
	}
}

// heal ends the blackhole; connections that lost bytes are cut so both
// sides start clean, as they would after a real partition.
func (p *linkProxy) heal() {
	p.delay.Store(0)
	if !p.blackhole.Swap(false) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *linkProxy) close() {
	_ = p.listener.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = io.Closer(c).Close()
	}
}
