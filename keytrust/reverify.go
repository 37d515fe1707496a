package keytrust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/privacyindex"
	"github.com/caliopen/caliopen/store"
	"github.com/caliopen/caliopen/verify"
)

// ReverifyStats counts what Reverify did.
type ReverifyStats struct {
	Pending   int // stored messages found with pending checks
	Completed int // of which every check has now completed and the PI was recomputed
}

// Reverify re-runs the DNS checks (DKIM, SPF, DMARC, ARC) of every stored
// inbound message of userID whose checks were pending (a DNS outage, or the
// verification budget ran out while the sender waited), and re-scores it
// once they all complete. The facts that do not depend on DNS — encryption,
// signature, key trust, history — stay as they were at delivery: key trust
// has since learnt from this very message, and the history is the one the
// message was compared with. A message still pending is left for the next
// run, so running it again after a crash loses nothing.
func Reverify(ctx context.Context, st store.Store, v *verify.Verifier, userID uuid.UUID) (ReverifyStats, error) {
	var stats ReverifyStats
	err := ingest.EachMessage(ctx, st, userID, func(m store.Message) error {
		if !pending(m) {
			return nil // unreadable facts are Recompute's to report
		}
		sec, _ := ingest.DecodeSecurity(m.Security)
		stats.Pending++
		done, err := reverifyOne(ctx, st, v, userID, m, sec)
		if err != nil {
			return fmt.Errorf("reverify: message %s: %w", m.ID, err)
		}
		if done {
			stats.Completed++
		}
		return nil
	})
	return stats, err
}

func reverifyOne(ctx context.Context, st store.Store, v *verify.Verifier, userID uuid.UUID, m store.Message, sec ingest.Security) (bool, error) {
	raw, err := st.GetBlob(ctx, m.RawHash)
	if err != nil {
		return false, err
	}
	var d Details
	if len(sec.Verification) > 0 && json.Unmarshal(sec.Verification, &d) != nil {
		d = Details{}
	}
	// The From the delivery verified with (ingest's choice: the first From,
	// else the envelope sender), not one derived again from the header.
	in := verify.Input{Raw: raw, From: d.From}
	if e := sec.Envelope; e != nil {
		in.MailFrom, in.ClientIP, in.Helo = e.MailFrom, e.ClientAddr, e.Helo
	}
	facts, err := v.Verify(ctx, in)
	if err != nil {
		return false, err
	}
	if len(facts.Pending()) > 0 {
		return false, nil // still unreachable: next run
	}
	var fresh privacyindex.MessageFeatures
	facts.Apply(&fresh)
	f := &sec.Features
	f.DKIM, f.DKIMAligned = fresh.DKIM, fresh.DKIMAligned
	f.SPF, f.SPFAligned = fresh.SPF, fresh.SPFAligned
	f.DMARC, f.DMARCPolicy = fresh.DMARC, fresh.DMARCPolicy
	f.ARC, f.ARCTrusted = fresh.ARC, fresh.ARCTrusted

	d.From, d.FromDomain = facts.From, facts.FromDomain
	d.DKIM, d.SPF, d.DMARC, d.ARC = facts.DKIM, facts.SPF, facts.DMARC, facts.ARC
	if sec.Verification, err = json.Marshal(d); err != nil {
		return false, err
	}
	b, err := json.Marshal(sec)
	if err != nil {
		return false, err
	}
	pi, err := ingest.MessagePI(sec.Features)
	if err != nil {
		return false, err
	}
	if err := st.SetSecurity(ctx, userID, m.ID, b, pi); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil // deleted meanwhile
		}
		return false, err
	}
	// The sender's history counts the completed check from now on (a
	// pending one never counted). The message itself is done either way.
	m.UserID = userID
	if err := ingest.UpdateHistory(ctx, st, m, sec.Features); err != nil {
		return true, err
	}
	return true, nil
}
