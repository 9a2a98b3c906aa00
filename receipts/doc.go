// Package receipts owns Tollgate's verifiable receipts: the leaf format and
// its Poseidon2 hashing, the durable ledger (Store), the receipt JSON and
// its offline verification.
package receipts
