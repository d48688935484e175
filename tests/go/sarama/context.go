package main

import "context"

// The consumers here stop by Close, not by their context.
func contextWithCancel() context.Context {
	return context.Background()
}
