package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// maxDisputeBytes bounds one dispute read back from Redis (three
// completion records and a detail line: a few KiB).
const maxDisputeBytes = 64 << 10

// RedisLog is the disputes' Log shared by gateway replicas: a Redis list
// of JSON disputes, oldest first, trimmed to Max. What is read back is
// checked (anyone who can write to the shared Redis can write there): an
// entry that is not a dispute with an ID, a disputed worker and a receipt
// is skipped and logged, never listed.
type RedisLog struct {
	Client redis.UniversalClient
	Key    string // e.g. "tollgate:disputes"
	Max    int    // entries kept (default 1000)
	Logger *slog.Logger
}

var _ Log = (*RedisLog)(nil)

func (l *RedisLog) max() int64 {
	if l.Max <= 0 {
		return 1000
	}
	return int64(l.Max)
}

// Add appends d and trims the list, in one transaction.
func (l *RedisLog) Add(ctx context.Context, d Dispute) error {
	if l.Client == nil || l.Key == "" {
		return errors.New("audit: RedisLog needs a client and a key")
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = l.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, l.Key, b)
		p.LTrim(ctx, l.Key, -l.max(), -1)
		return nil
	})
	return err
}

// List reads the disputes kept, oldest first: the newest Max entries
// only, however long someone else made the list.
func (l *RedisLog) List(ctx context.Context) ([]Dispute, error) {
	if l.Client == nil || l.Key == "" {
		return nil, errors.New("audit: RedisLog needs a client and a key")
	}
	raws, err := l.Client.LRange(ctx, l.Key, -l.max(), -1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Dispute, 0, len(raws))
	for i, raw := range raws {
		d, err := parseDispute([]byte(raw))
		if err != nil {
			if l.Logger != nil {
				l.Logger.Warn("shared dispute log: entry skipped", "key", l.Key, "index", i, "err", err)
			}
			continue
		}
		out = append(out, *d)
	}
	return out, nil
}

// parseDispute decodes one stored dispute: exact field names, nothing
// unknown, one document, and the fields a listing needs present.
func parseDispute(b []byte) (*Dispute, error) {
	if len(b) > maxDisputeBytes {
		return nil, fmt.Errorf("%d bytes, more than %d", len(b), maxDisputeBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Dispute
	if err := dec.Decode(&d); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the dispute")
	}
	if d.ID == "" || d.WorkerID == "" || d.ReceiptID == "" || len(d.Executions) > 3 {
		return nil, errors.New("not a dispute (id, worker_id, receipt_id, at most three executions)")
	}
	return &d, nil
}
