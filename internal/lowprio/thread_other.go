//go:build !linux

package lowprio

import "errors"

func lockThread() {}

func unlockThread() {}

func onMainThread() bool { return false }

// lowerThread is not supported here: the child runs at normal priority.
func lowerThread() error { return errors.New("lowprio: not supported on this platform") }
