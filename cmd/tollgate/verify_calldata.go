package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/tollgate-ai/tollgate/receipts"
)

// printCalldata prints, for a receipt that verified, the transaction data
// that verifies its batch on chain (TollgateBatchVerifier.verifyBatch, from
// `tollgate keys solidity`): "ID<TAB>calldata<TAB>0x...". Receipts of
// several in one batch share it.
func printCalldata(w io.Writer, raw json.RawMessage) {
	var r receipts.Receipt
	if err := json.Unmarshal(raw, &r); err != nil || r.Batch == nil {
		return
	}
	cd, err := receipts.Calldata(r.Batch)
	if err != nil {
		fmt.Fprintf(w, "%s\tcalldata\tnone: %s\n", printable(r.ID), printable(err.Error()))
		return
	}
	fmt.Fprintf(w, "%s\tcalldata\t%s\n", printable(r.ID), cd)
}
