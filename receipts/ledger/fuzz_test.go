package ledger

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-ai/tollgate/receipts"
)

// storedSeeds are an entry and its batch as the stores keep them
// (bbolt and the spool: JSON values; Redis: the entry JSON in field "j"):
// pending, proven, failed.
func storedSeeds() (entries, batches [][]byte) {
	c := completion(3)
	pending, _ := json.Marshal(&Entry{Seq: 7, ID: "rcpt_a", Completion: c, RecordedAt: time.Unix(1800000000, 0).UTC()})
	batched, _ := json.Marshal(&Entry{Seq: 8, ID: "rcpt_b", Completion: c, BatchSeq: 2, Index: 1})
	leaves := make([]string, 8)
	for i := range leaves {
		leaves[i] = "0x" + strconv.Itoa(i+1)
	}
	proven, _ := json.Marshal(&Batch{Seq: 2, WorkerID: testWorker, Model: "m", ModelDigest: digest("w"), Capacity: 8,
		Receipts: []string{"rcpt_x", "rcpt_b"}, Status: receipts.StatusProven, Leaves: leaves, Circuit: receipts.CircuitV2,
		Public: &receipts.BatchPublic{Root: "0x1", ModelVersion: "0x2", RegistryRoot: "0x3", WorkerID: testWorker, LeafCount: 2},
		Proof:  "AAAA", VKID: "vk", ProvenAt: time.Unix(1800000001, 0).UTC()})
	failed, _ := json.Marshal(&Batch{Seq: 2, Capacity: 8, Status: receipts.StatusFailed, Error: "worker gone"})
	open, _ := json.Marshal(&Batch{Seq: 2, Capacity: 8, Status: receipts.StatusPending})
	return [][]byte{pending, batched, batched, batched, []byte(`{"completion":null}`), []byte(`{"index":-1,"batch_seq":2,"completion":{}}`)},
		[][]byte{nil, proven, failed, open, proven, proven}
}

// FuzzStoredEntry: whatever bytes a store hands back for an entry and its
// batch (a corrupt file, a hostile Redis), rendering the receipt either
// fails with an error or yields a receipt that marshals; it never panics
// (one receipt must not take the export route down).
func FuzzStoredEntry(f *testing.F) {
	es, bs := storedSeeds()
	for i := range es {
		f.Add(es[i], bs[i])
	}
	f.Fuzz(func(t *testing.T, entry, batch []byte) {
		var e Entry
		if json.Unmarshal(entry, &e) != nil {
			return
		}
		var b *Batch
		if batch != nil {
			b = &Batch{}
			if json.Unmarshal(batch, b) != nil {
				return
			}
		}
		checkRender(t, &e, b)
	})
}

// FuzzRedisEntry: the Redis store's entry hash (fields j, s, b, i as HMGET
// returns them) decodes to an entry or an error, and renders as above.
func FuzzRedisEntry(f *testing.F) {
	es, bs := storedSeeds()
	for i := range es {
		f.Add(string(es[i]), "8", "2", "1", bs[i])
	}
	f.Add("{}", "x", "", "-1", []byte(nil))
	f.Fuzz(func(t *testing.T, j, s, bseq, idx string, batch []byte) {
		e, err := decodeEntry("rcpt_b", []any{j, s, bseq, idx})
		if err != nil {
			return
		}
		var b *Batch
		if batch != nil {
			b = &Batch{}
			if json.Unmarshal(batch, b) != nil {
				return
			}
		}
		checkRender(t, e, b)
	})
}

func checkRender(t *testing.T, e *Entry, b *Batch) {
	t.Helper()
	r, err := render(e, b, treeCache{}, false)
	if err != nil {
		return
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("rendered receipt does not marshal: %v", err)
	}
}
