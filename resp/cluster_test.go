package resp

import "testing"

func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{"123456789": 0x31c3 % HashSlots, "foo": 12182, "{}foo": keySlot([]byte("{}foo")), "a{b}c": keySlot([]byte("b")), "a{}{b}": keySlot([]byte("a{}{b}"))} {
		if got := keySlot([]byte(key)); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if keySlot([]byte("{}foo")) == keySlot([]byte("")) {
		t.Error("an empty hash tag was used as the tag")
	}
}
