package responses

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	bolt "go.etcd.io/bbolt"
)

// Stored is a response kept for GET, DELETE and previous_response_id.
type Stored struct {
	// Owner is the digest of the key that created it (see the gateway's
	// responseOwner); only that key reads, continues or deletes it.
	Owner   string    `json:"owner"`
	Created time.Time `json:"created"`
	// Conversation is what the response ran on: the conversation of the
	// response it continued, then its own input (not its instructions).
	Conversation []Item    `json:"conversation"`
	Response     *Response `json:"response"`
	// InputStart is where the response's own input starts in
	// Conversation (what came before is the previous response's).
	InputStart int `json:"input_start,omitempty"`
}

// InputItems are the response's own input items as GET
// /v1/responses/{id}/input_items lists them, oldest first, each with an ID
// derived from the response's (stable across reads).
func (s *Stored) InputItems() []map[string]any {
	start := min(max(s.InputStart, 0), len(s.Conversation))
	out := make([]map[string]any, 0, len(s.Conversation)-start)
	for i, it := range s.Conversation[start:] {
		sum := sha256.Sum256([]byte(s.Response.ID + "/" + strconv.Itoa(i)))
		suffix := hex.EncodeToString(sum[:12])
		switch it.Type {
		case ItemMessage:
			part := "input_text"
			if it.Role == "assistant" {
				part = "output_text"
			}
			out = append(out, map[string]any{"id": "msg_" + suffix, "type": ItemMessage, "role": it.Role, "status": StatusCompleted,
				"content": []map[string]any{{"type": part, "text": it.Content}}})
		case ItemFunctionCall:
			out = append(out, map[string]any{"id": "fc_" + suffix, "type": ItemFunctionCall, "call_id": it.CallID, "name": it.Name,
				"arguments": it.Arguments, "status": StatusCompleted})
		case ItemFunctionCallOutput:
			out = append(out, map[string]any{"id": "fco_" + suffix, "type": ItemFunctionCallOutput, "call_id": it.CallID,
				"output": it.Output, "status": StatusCompleted})
		}
	}
	return out
}

// History is what a request continuing s runs on before its own input.
func (s *Stored) History() []Item {
	return append(append([]Item(nil), s.Conversation...), OutputItems(s.Response.Output)...)
}

// Retention bounds what a store keeps (config responses.*).
type Retention struct {
	// TTL is how long a response is kept (default 30 days).
	TTL time.Duration
	// MaxResponses is the most responses kept; the oldest go first
	// (default 100,000).
	MaxResponses int
	// MaxBytes is the largest stored response (its conversation and
	// output, as JSON); a larger one is not stored (default 4 MiB).
	MaxBytes int
}

// Defaults of Retention.
const (
	DefaultTTL          = 30 * 24 * time.Hour
	DefaultMaxResponses = 100_000
	DefaultMaxBytes     = 4 << 20
)

// WithDefaults fills zero fields.
func (r Retention) WithDefaults() Retention {
	if r.TTL <= 0 {
		r.TTL = DefaultTTL
	}
	if r.MaxResponses <= 0 {
		r.MaxResponses = DefaultMaxResponses
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = DefaultMaxBytes
	}
	return r
}

// ErrTooLarge is returned by Put for a response over Retention.MaxBytes.
var ErrTooLarge = errors.New("responses: stored response exceeds the size bound")

// NotFound is the 404 for an unknown response, one of another key, and
// one past its retention alike: IDs do not leak whether they exist.
func NotFound(param, id string) error {
	return apierr.NotFound(param, "response_not_found", "Response with id '%s' not found.", truncate(id))
}

func encode(s *Stored, r Retention) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if len(b) > r.MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, bound %d", ErrTooLarge, len(b), r.MaxBytes)
	}
	return b, nil
}

func decodeOwned(b []byte, owner, id string, now time.Time, ttl time.Duration, param string) (*Stored, error) {
	var s Stored
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, apierr.Internal(fmt.Errorf("responses: stored %s: %w", id, err))
	}
	if s.Owner != owner || s.Response == nil || now.Sub(s.Created) > ttl {
		return nil, NotFound(param, id)
	}
	return &s, nil
}

// BoltStore keeps responses in a bbolt file (the embedded store of a
// single gateway, in its data directory).
type BoltStore struct {
	db  *bolt.DB
	ret Retention
	now func() time.Time
}

var (
	bucketResponses = []byte("responses") // id → Stored JSON
	bucketByAge     = []byte("by_age")    // created (8 bytes, big-endian ns) + id → nil
	bucketMeta      = []byte("meta")      // "count" → uint64
	keyCount        = []byte("count")
)

// OpenBolt opens (creating) the store at path. now is the clock (nil:
// time.Now).
func OpenBolt(path string, ret Retention, now func() time.Time) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("responses store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketResponses, bucketByAge, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("responses store %s: %w", path, err)
	}
	if now == nil {
		now = time.Now
	}
	return &BoltStore{db: db, ret: ret.WithDefaults(), now: now}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

func ageKey(created time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(created.UnixNano()))
	return append(k, id...)
}

// Put stores r under its response ID, stamped with the store's clock when
// r.Created is zero, then drops what is past its TTL and the oldest
// beyond MaxResponses.
func (s *BoltStore) Put(ctx context.Context, r *Stored) error {
	if r.Created.IsZero() {
		r.Created = s.now().UTC()
	}
	b, err := encode(r, s.ret)
	if err != nil {
		return err
	}
	id := r.Response.ID
	return s.db.Update(func(tx *bolt.Tx) error {
		resp, age, meta := tx.Bucket(bucketResponses), tx.Bucket(bucketByAge), tx.Bucket(bucketMeta)
		count := readCount(meta)
		if resp.Get([]byte(id)) == nil {
			count++
		}
		if err := resp.Put([]byte(id), b); err != nil {
			return err
		}
		if err := age.Put(ageKey(r.Created, id), nil); err != nil {
			return err
		}
		expired := uint64(s.now().Add(-s.ret.TTL).UnixNano())
		c := age.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.First() {
			if binary.BigEndian.Uint64(k[:8]) >= expired && count <= uint64(s.ret.MaxResponses) {
				break
			}
			old := append([]byte(nil), k[8:]...) // k is the page's memory
			if err := c.Delete(); err != nil {
				return err
			}
			if resp.Get(old) != nil {
				if err := resp.Delete(old); err != nil {
					return err
				}
				count--
			}
		}
		return writeCount(meta, count)
	})
}

func readCount(meta *bolt.Bucket) uint64 {
	if v := meta.Get(keyCount); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func writeCount(meta *bolt.Bucket, n uint64) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, n)
	return meta.Put(keyCount, v)
}

// Get returns owner's response id, or NotFound (param names the request
// field that named it, "" for a path).
func (s *BoltStore) Get(ctx context.Context, owner, id, param string) (*Stored, error) {
	var b []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketResponses).Get([]byte(id)); v != nil {
			b = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, apierr.Internal(err)
	}
	if b == nil {
		return nil, NotFound(param, id)
	}
	return decodeOwned(b, owner, id, s.now(), s.ret.TTL, param)
}

// Delete removes owner's response id, or returns NotFound.
func (s *BoltStore) Delete(ctx context.Context, owner, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		resp := tx.Bucket(bucketResponses)
		v := resp.Get([]byte(id))
		if v == nil {
			return NotFound("", id)
		}
		st, err := decodeOwned(v, owner, id, s.now(), s.ret.TTL, "")
		if err != nil {
			return err
		}
		if err := resp.Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketByAge).Delete(ageKey(st.Created, id)); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if n := readCount(meta); n > 0 {
			return writeCount(meta, n-1)
		}
		return nil
	})
}
