package receipts

import (
	"errors"
	"fmt"
)

// ErrDuplicate is returned by Duplicates.Add for a receipt that bills a
// request, or a leaf, that an earlier receipt of the set already bills.
var ErrDuplicate = errors.New("duplicate receipt")

// Duplicates finds, across a set of receipts (an export, the files given
// to `tollgate verify`), receipts that bill one served request twice: the
// same request ID, or the same leaf, in two receipts. Each receipt on its
// own may verify; together they are one request billed twice. The zero
// value is ready to use.
type Duplicates struct {
	requests map[string]string // request ID → first receipt ID
	leaves   map[string]string // leaf (recomputed from the fields) → first receipt ID
}

// Add records r and fails with ErrDuplicate if its request ID or its leaf
// (recomputed from its fields, not the stated one) was seen in an earlier
// receipt. The same receipt (same ID) given twice is not a duplicate.
func (d *Duplicates) Add(r *Receipt) error {
	if d.requests == nil {
		d.requests, d.leaves = map[string]string{}, map[string]string{}
	}
	if first, ok := d.requests[r.RequestID]; ok && first != r.ID {
		return fmt.Errorf("%w: request %q is also billed by receipt %s", ErrDuplicate, r.RequestID, first)
	}
	leaf := ""
	if _, _, l, err := r.LeafFields(); err == nil {
		leaf = ElementHex(l)
		if first, ok := d.leaves[leaf]; ok && first != r.ID {
			return fmt.Errorf("%w: its leaf %s is also billed by receipt %s", ErrDuplicate, leaf, first)
		}
	}
	d.requests[r.RequestID] = r.ID
	if leaf != "" {
		d.leaves[leaf] = r.ID
	}
	return nil
}
