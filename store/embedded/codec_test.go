package embedded

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/caliopen/caliopen/store"
)

// fill sets every field reachable from v to a distinct non-zero value, so a
// field the codec forgets cannot round-trip by accident.
func fill(t testing.TB, v reflect.Value, seed *int) {
	t.Helper()
	*seed++
	n := *seed
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Unix(int64(1_700_000_000+n), int64(n*1000+7)).UTC()))
		return
	case v.Type() == reflect.TypeFor[uuid.UUID]():
		v.Set(reflect.ValueOf(uuid.New()))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+n%26)) + time.Duration(n).String())
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte{byte(n), 1, 2})
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(t, s.Index(i), seed)
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i), seed)
		}
	default:
		t.Fatalf("fill: no rule for %s (%s): extend the test and codec.go", v.Type(), v.Kind())
	}
}

func TestCodecCoversEveryField(t *testing.T) {
	seed := 0
	var c store.Conversation
	fill(t, reflect.ValueOf(&c).Elem(), &seed)
	got, err := decodeConversation(encodeConversation(c))
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("conversation round trip:\n got %+v, %v\nwant %+v", got, err, c)
	}

	var m store.Message
	fill(t, reflect.ValueOf(&m).Elem(), &seed)
	gotM, err := decodeMessage(encodeMessage(m))
	if err != nil || !reflect.DeepEqual(gotM, m) {
		t.Errorf("message round trip:\n got %+v, %v\nwant %+v", gotM, err, m)
	}

	// Zero values stay zero (times especially).
	if got, err := decodeMessage(encodeMessage(store.Message{})); err != nil || !reflect.DeepEqual(got, store.Message{}) {
		t.Errorf("zero message round trip: %+v, %v", got, err)
	}
}

func TestCodecRejectsDamage(t *testing.T) {
	seed := 0
	var m store.Message
	fill(t, reflect.ValueOf(&m).Elem(), &seed)
	b := encodeMessage(m)
	for _, bad := range [][]byte{nil, b[:1], b[:len(b)/2], b[:len(b)-1], append(b[:len(b):len(b)], 0), {99}} {
		if _, err := decodeMessage(bad); err == nil {
			t.Errorf("decodeMessage accepted %d damaged bytes", len(bad))
		}
	}
	// A huge announced count must not allocate: it fails as truncated.
	if _, err := decodeConversation(append([]byte{conversationFormat}, make([]byte, 32)...)); err == nil {
		t.Error("decodeConversation accepted a record of zeros")
	}
}

func sampleConversation() store.Conversation {
	return store.Conversation{ID: uuid.New(), UserID: uuid.New(), Key: "k-0123456789abcdef",
		ContactIDs: []uuid.UUID{uuid.New(), uuid.New()},
		Participants: []store.Participant{
			{Role: "from", Protocol: "email", Address: "bob@example.net", Name: "Bob", ContactID: uuid.New()},
			{Role: "to", Protocol: "email", Address: "alice@example.org"}},
		Subject: "Re: the quarterly report", CreatedAt: time.Now(), LastActivity: time.Now(), LastMessageID: uuid.New(),
		Excerpt: "Hello Alice, here is the report you asked for; more in the attachment. Best, Bob", MessageCount: 12,
		UnreadCount: 2, Protocols: []string{"email"}}
}

// BenchmarkDecodeConversation compares the two encodings on the record a
// conversation page decodes 50 times.
func BenchmarkDecodeConversation(b *testing.B) {
	c := sampleConversation()
	js, _ := json.Marshal(c)
	bin := encodeConversation(c)
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			var d store.Conversation
			if err := json.Unmarshal(js, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binary", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeConversation(bin); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzDecode: damaged bytes from disk must give an error, never a panic or
// a huge allocation.
func FuzzDecode(f *testing.F) {
	seed := 0
	var m store.Message
	fill(f, reflect.ValueOf(&m).Elem(), &seed)
	f.Add(encodeMessage(m))
	f.Add(encodeConversation(sampleConversation()))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMessage(b); err == nil {
			if again, err := decodeMessage(encodeMessage(m)); err != nil || !reflect.DeepEqual(again, m) {
				t.Errorf("message re-encoding differs: %v", err)
			}
		}
		if c, err := decodeConversation(b); err == nil {
			if again, err := decodeConversation(encodeConversation(c)); err != nil || !reflect.DeepEqual(again, c) {
				t.Errorf("conversation re-encoding differs: %v", err)
			}
		}
	})
}
