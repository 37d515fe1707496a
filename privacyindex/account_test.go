package privacyindex

import (
	"math/rand"
	"testing"
)

// vector12 is an account with a server-side key, no second factor and a weak
// password (1 of 4), and traffic with contacts averaging 50.
func vector12() AccountInput {
	return AccountInput{
		Setup: AccountSetup{HasKeyPair: true, KeyCustody: CustodyServer, PasswordStrength: 1},
		Contacts: []ContactTraffic{
			{ID: "bob", Observed: 70, Messages: 10},
			{ID: "carol", Observed: 30, Messages: 10},
			{ID: "dormant", Observed: 0, Messages: 0}, // no traffic in 90 days: no weight
		},
	}
}

func TestVector12(t *testing.T) {
	r := Account(vector12())
	// Set-up 20 + 10 + 2.5 = 32.5; 0.6 × 50 + 0.4 × 32.5 = 43.
	if r.Version != Version || r.Score != 43 || r.Band != "C" || r.Setup != 32.5 || r.Traffic != 50 || !r.HasTraffic {
		t.Fatalf("account: %+v", r)
	}
	for action, want := range map[string]int{
		ActKeepKeyOnDevices: 6, // 15 set-up points × 0.4
		ActSecondFactor:     8, // 20 × 0.4
		ActStrongerPassword: 3, // (4 − 1) × 2.5 × 0.4
		ActPublishKey:       6,
		ActDomainPolicy:     4,
	} {
		if got := adviceGain(r.Advice, action); got != want {
			t.Errorf("%s gain %d, want %d (advice %+v)", action, got, want, r.Advice)
		}
	}
	if adviceGain(r.Advice, ActCreateKey) != -1 {
		t.Errorf("create_key advised to an account with a key pair: %+v", r.Advice)
	}
	if r.Advice[0].Action != ActSecondFactor {
		t.Errorf("advice not ordered by gain: %+v", r.Advice)
	}
	var sum float64
	for _, f := range r.Facts[:6] {
		sum += f.Points
	}
	if sum != 32.5 {
		t.Errorf("set-up facts sum to %v, want 32.5: %+v", sum, r.Facts)
	}
}

func TestAccountWithoutTraffic(t *testing.T) {
	in := vector12()
	in.Contacts = nil
	r := Account(in)
	// Set-up only: 32.5 rounds half up to 33; gains are then in full set-up points.
	if r.Score != 33 || r.HasTraffic {
		t.Fatalf("no traffic: %+v", r)
	}
	for action, want := range map[string]int{ActKeepKeyOnDevices: 15, ActSecondFactor: 20, ActStrongerPassword: 7} {
		if g := adviceGain(r.Advice, action); g != want {
			t.Errorf("%s without traffic: gain %d, want %d", action, g, want)
		}
	}
	full := Account(AccountInput{Setup: AccountSetup{HasKeyPair: true, KeyCustody: CustodyDevice, KeyPublished: true,
		SecondFactor: true, PasswordStrength: 4, DomainPolicy: true}})
	if full.Score != 100 || full.Band != "A" || len(full.Advice) != 0 {
		t.Errorf("perfect set-up: %+v", full)
	}
	// Custody and publication mean nothing without a key pair; once it
	// exists they count, so creating it gains 20 + 25 + 15.
	none := Account(AccountInput{Setup: AccountSetup{KeyCustody: CustodyDevice, KeyPublished: true, PasswordStrength: 9}})
	if none.Score != 10 || adviceGain(none.Advice, ActCreateKey) != 60 {
		t.Errorf("no key pair: %+v", none)
	}
}

// Gains in account points are exact multiples of 0.4 × set-up points
// whatever the traffic: the arithmetic is done in integers.
func TestAccountGainsExact(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	for i := 0; i < 2000; i++ {
		in := AccountInput{Setup: AccountSetup{HasKeyPair: true, KeyCustody: CustodyServer, PasswordStrength: rng.Intn(4)}}
		for j := rng.Intn(5) + 1; j > 0; j-- {
			in.Contacts = append(in.Contacts, ContactTraffic{Observed: rng.Intn(101), Messages: rng.Intn(1000) + 1})
		}
		r := Account(in)
		if r.Score < 0 || r.Score > 100 {
			t.Fatalf("score %d", r.Score)
		}
		if g := adviceGain(r.Advice, ActKeepKeyOnDevices); g != 6 {
			t.Fatalf("keep_key_on_devices gain %d, want 6: %+v", g, in)
		}
		if g := adviceGain(r.Advice, ActSecondFactor); g != 8 {
			t.Fatalf("enable_second_factor gain %d, want 8: %+v", g, in)
		}
	}
}
