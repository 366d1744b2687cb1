package dbusapi_test

import (
	"testing"

	"github.com/containers/qmd/internal/dbusapi"
	"github.com/containers/qmd/internal/dbusapi/dbustest"
)

// protectingBackend is a fake backend with the host-level protector.
type protectingBackend struct {
	*dbustest.FakeBackend
	units []dbusapi.ProtectedUnit
}

func (p protectingBackend) Protected() []dbusapi.ProtectedUnit { return p.units }

// TestManagerProtected: Manager.Protected lists the protector's entries as
// a(sss) sorted by unit, over a real bus; a backend without a protector
// has an empty list.
func TestManagerProtected(t *testing.T) {
	b := busTest(t)
	fb := protectingBackend{FakeBackend: dbustest.NewFakeBackend(nil), units: []dbusapi.ProtectedUnit{
		{Unit: "brakes.service", Cgroup: "/asil.slice/brakes.service", State: "watching"},
		{Unit: "/asil.slice/abs.scope", Cgroup: "/asil.slice/abs.scope", State: "protected"},
		{Unit: "steer.service", State: "not-running"},
	}}
	b.serve(t, fb, dbusapi.Options{})
	client := b.connect(t)
	v, err := client.Object(dbusapi.BusName, mgr).GetProperty(dbusapi.ManagerInterface + ".Protected")
	if err != nil {
		t.Fatal(err)
	}
	if v.Signature().String() != "a(sss)" {
		t.Fatalf("signature %s", v.Signature())
	}
	var got []dbusapi.ProtectedUnit
	if err := v.Store(&got); err != nil {
		t.Fatal(err)
	}
	want := []dbusapi.ProtectedUnit{fb.units[1], fb.units[0], fb.units[2]}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("Protected = %+v, want %+v", got, want)
	}
}

func TestManagerProtectedWithoutProtector(t *testing.T) {
	b := busTest(t)
	b.serve(t, dbustest.NewFakeBackend(nil), dbusapi.Options{})
	v, err := b.connect(t).Object(dbusapi.BusName, mgr).GetProperty(dbusapi.ManagerInterface + ".Protected")
	if err != nil {
		t.Fatal(err)
	}
	var got []dbusapi.ProtectedUnit
	if err := v.Store(&got); err != nil || len(got) != 0 || v.Signature().String() != "a(sss)" {
		t.Errorf("Protected = %v (%s), %v; want an empty a(sss)", got, v.Signature(), err)
	}
}
