package workers

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// producedFile is the name of the completion record log in an agent's DataDir.
const producedFile = "completions.jsonl"

// producedLog is the agent's bounded record of the completions it produced,
// keyed by request ID, so that it can later check what it is asked to
// countersign. It is an in-memory FIFO of at most cap records, optionally
// mirrored to an append-only JSON-lines file that is compacted to the newest
// cap records when it is reopened and whenever it reaches 2 × cap records.
// Appends are not fsync'd: a record lost in a crash only means the worker
// declines to countersign that request.
type producedLog struct {
	mu    sync.Mutex
	cap   int
	byID  map[string]*Completion
	order []string // ring of request IDs, oldest at head
	head  int
	path  string
	file  *os.File
	lines int // records in the file, for compaction
}

func openProducedLog(dir string, capacity int) (*producedLog, error) {
	p := &producedLog{cap: capacity, byID: map[string]*Completion{}}
	if dir == "" {
		return p, nil
	}
	p.path = filepath.Join(dir, producedFile)
	if err := p.load(p.path); err != nil {
		return p, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, fmt.Errorf("completion records: %w", err)
	}
	if err := p.compactLocked(); err != nil {
		return p, err
	}
	return p, nil
}

// compactLocked rewrites the file with only the records held in memory and
// reopens it for appending. It runs at open and whenever the file holds
// twice the cap, so the file stays within 2 × cap records.
func (p *producedLog) compactLocked() error {
	if p.file != nil {
		p.file.Close()
		p.file = nil
	}
	tmp := p.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("completion records: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, c := range p.snapshot() {
		b, _ := json.Marshal(c)
		w.Write(append(b, '\n'))
	}
	if err := errors.Join(w.Flush(), f.Sync(), f.Close(), os.Rename(tmp, p.path)); err != nil {
		return fmt.Errorf("completion records: compact: %w", err)
	}
	f, err = os.OpenFile(p.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("completion records: %w", err)
	}
	p.file = f
	p.lines = len(p.order)
	return nil
}

func (p *producedLog) load(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("completion records: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var c Completion
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil || c.RequestID == "" {
			continue // a torn last line after a crash
		}
		p.addLocked(&c)
	}
	return sc.Err()
}

func (p *producedLog) add(c *Completion) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addLocked(c)
	if p.file == nil {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := p.file.Write(append(b, '\n')); err != nil {
		return err
	}
	p.lines++
	if p.lines >= 2*p.cap {
		return p.compactLocked()
	}
	return nil
}

func (p *producedLog) addLocked(c *Completion) {
	if _, dup := p.byID[c.RequestID]; dup {
		p.byID[c.RequestID] = c
		return
	}
	if len(p.order) < p.cap {
		p.order = append(p.order, c.RequestID)
	} else {
		delete(p.byID, p.order[p.head])
		p.order[p.head] = c.RequestID
		p.head = (p.head + 1) % p.cap
	}
	p.byID[c.RequestID] = c
}

func (p *producedLog) get(requestID string) (*Completion, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.byID[requestID]
	if !ok {
		return nil, false
	}
	cp := *c
	return &cp, true
}

// snapshot lists the records oldest first.
func (p *producedLog) snapshot() []*Completion {
	out := make([]*Completion, 0, len(p.order))
	for i := range p.order {
		out = append(out, p.byID[p.order[(p.head+i)%len(p.order)]])
	}
	return out
}

// Close closes the record file, if any.
func (p *producedLog) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.file == nil {
		return nil
	}
	err := p.file.Close()
	p.file = nil
	return err
}
