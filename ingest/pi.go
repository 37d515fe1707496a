package ingest

import (
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
)

// MessagePI scores features as ingest stores them, for code that updates a
// stored message's facts (re-verification of pending checks).
func MessagePI(f privacyindex.MessageFeatures) (store.PI, error) { return messagePI(f) }
