package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/tollgate-ai/tollgate/internal/task"
	"github.com/tollgate-ai/tollgate/receipts"
)

// subjectEntry is confEntry i recorded for subject.
func subjectEntry(i int, subject string) *Entry {
	e := confEntry(i)
	e.Completion.Subject = subject
	return e
}

// TestStoreListSubject: a subject's index lists its own entries only, in
// order, paged by its own sequence, whatever the others record between.
func TestStoreListSubject(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, reopen func() Store) {
		ctx := context.Background()
		var alice, bob []string
		for i := range 9 {
			sub := "bob"
			if i%3 == 0 {
				sub = "alice"
			}
			e := subjectEntry(i, sub)
			mustAppend(t, st, e)
			if sub == "alice" {
				alice = append(alice, e.ID)
				if e.SubjectSeq != uint64(len(alice)) {
					t.Errorf("%s: subject seq %d, want %d", e.ID, e.SubjectSeq, len(alice))
				}
			} else {
				bob = append(bob, e.ID)
			}
		}
		st = reopen()
		tests := []struct {
			name    string
			subject string
			after   uint64
			limit   int
			want    []string
		}{
			{"alice all", "alice", 0, 10, alice},
			{"alice page 2", "alice", 1, 1, alice[1:2]},
			{"bob all", "bob", 0, 10, bob},
			{"bob after alice's last", "bob", 3, 10, bob[3:]},
			{"unknown subject", "carol", 0, 10, nil},
			{"empty subject", "", 0, 10, nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, _, err := st.ListSubject(ctx, tc.subject, tc.after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(ids(got), tc.want, emptyIsNil); diff != "" {
					t.Errorf("ids (-got +want):\n%s", diff)
				}
				for i, e := range got {
					if e.SubjectSeq != tc.after+uint64(i)+1 || e.Subject() != tc.subject {
						t.Errorf("%s: subject %q seq %d", e.ID, e.Subject(), e.SubjectSeq)
					}
				}
			})
		}
	})
}

// TestStoreVoid: a void entry is listed and counted, never pending.
func TestStoreVoid(t *testing.T) {
	forEachStore(t, func(t *testing.T, st Store, _ func() Store) {
		ctx := context.Background()
		v := &Entry{ID: "rcpt_void", RecordedAt: time.Unix(1800000000, 0).UTC(),
			Void: &task.Void{RequestID: "req-v", Subject: "alice", Model: "m", Reason: "nothing served", Time: time.Unix(1800000000, 0).UTC()}}
		mustAppend(t, st, confEntry(1), v, confEntry(2))
		pending, err := st.Pending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(pending), []string{confEntry(1).ID, confEntry(2).ID}); diff != "" {
			t.Errorf("pending (-got +want):\n%s", diff)
		}
		got, _, err := st.ListSubject(ctx, "alice", 0, 10)
		if err != nil || len(got) != 1 || got[0].Void == nil || got[0].Completion != nil {
			t.Fatalf("alice's entries %+v, err %v", got, err)
		}
		if c, ok := st.(Counter); ok {
			n, err := c.Counts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(n, Counts{Pending: 2, Void: 1}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
		}
	})
}

// TestLedgerTenantIsolation plays a client reading another's receipts:
// ReceiptOf answers 404 (the same error as an unknown ID) and ExportOf
// lists and pages only the subject's own, with cursors of its own.
func TestLedgerTenantIsolation(t *testing.T) {
	for _, k := range storeKinds() {
		t.Run(k.name, func(t *testing.T) {
			st, _ := k.open(t)
			l := New(st, Options{})
			ctx := context.Background()
			for i := range 6 {
				c := completion(i)
				c.Subject = map[bool]string{true: "alice", false: "bob"}[i%2 == 0]
				if err := l.Record(ctx, fmt.Sprintf("rcpt_%d", i), c); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.RecordVoid(ctx, "rcpt_v", &task.Void{RequestID: "req-v", Subject: "bob", Model: "m", Reason: "the stream failed before any token"}); err != nil {
				t.Fatal(err)
			}

			var ae *apierr.Error
			for _, id := range []string{"rcpt_1", "rcpt_v", "rcpt_nope"} {
				_, err := l.ReceiptOf(ctx, "alice", id)
				if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Code != "receipt_not_found" {
					t.Errorf("alice reads %s: err %v, want 404 receipt_not_found", id, err)
				}
			}
			raw, err := l.ReceiptOf(ctx, "bob", "rcpt_v")
			if err != nil {
				t.Fatal(err)
			}
			var r receipts.Receipt
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			if r.Status != receipts.StatusVoid || r.Error == "" || r.Leaf != "" || r.Cursor != "4" {
				t.Errorf("bob's void receipt %+v", r)
			}

			page := func(subject, after string, limit int) (got []string, cursors []string, next string) {
				t.Helper()
				var items []json.RawMessage
				var err error
				if subject == "" {
					items, next, err = l.Export(ctx, after, limit)
				} else {
					items, next, err = l.ExportOf(ctx, subject, after, limit)
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, it := range items {
					var r receipts.Receipt
					if err := json.Unmarshal(it, &r); err != nil {
						t.Fatal(err)
					}
					if subject != "" && r.Subject != subject {
						t.Errorf("%s's export holds %s of %s", subject, r.ID, r.Subject)
					}
					got, cursors = append(got, r.ID), append(cursors, r.Cursor)
				}
				return got, cursors, next
			}
			got, cursors, next := page("alice", "", 2)
			if diff := cmp.Diff(got, []string{"rcpt_0", "rcpt_2"}); diff != "" || next != "2" {
				t.Errorf("alice page 1 (-got +want):\n%s next %q", diff, next)
			}
			if diff := cmp.Diff(cursors, []string{"1", "2"}); diff != "" {
				t.Errorf("alice's cursors count other keys' receipts (-got +want):\n%s", diff)
			}
			got, _, next = page("alice", next, 2)
			if diff := cmp.Diff(got, []string{"rcpt_4"}); diff != "" || next != "" {
				t.Errorf("alice page 2 (-got +want):\n%s next %q", diff, next)
			}
			got, _, _ = page("bob", "", 10)
			if diff := cmp.Diff(got, []string{"rcpt_1", "rcpt_3", "rcpt_5", "rcpt_v"}); diff != "" {
				t.Errorf("bob (-got +want):\n%s", diff)
			}
			got, _, _ = page("", "", 10)
			if len(got) != 7 {
				t.Errorf("the unscoped export lists %d receipts, want 7", len(got))
			}
		})
	}
}

// TestBoltIndexesOldLedger: a ledger written before the per-subject index
// gets its entries indexed when opened.
func TestBoltIndexesOldLedger(t *testing.T) {
	path := t.TempDir() + "/old.db"
	st, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, st, subjectEntry(0, "alice"), subjectEntry(1, "bob"), subjectEntry(2, "alice"))
	// Make it an old ledger: no index, no marker, no subject seqs.
	err = st.db.Update(func(tx *bolt.Tx) error {
		eb := tx.Bucket(bucketEntries)
		for seq := uint64(1); seq <= 3; seq++ {
			e, err := getEntry(tx, seq)
			if err != nil {
				return err
			}
			e.SubjectSeq = 0
			v, _ := json.Marshal(e)
			if err := eb.Put(key(seq), v); err != nil {
				return err
			}
		}
		return errors.Join(tx.DeleteBucket(bucketSubjects), tx.Bucket(bucketMeta).Delete(metaSubjectsIndexed))
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, _, err := st.ListSubject(context.Background(), "alice", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ids(got), []string{subjectEntry(0, "").ID, subjectEntry(2, "").ID}); diff != "" {
		t.Errorf("alice after reindexing (-got +want):\n%s", diff)
	}
	if got[1].SubjectSeq != 2 {
		t.Errorf("subject seq %d, want 2", got[1].SubjectSeq)
	}
}
