// Package catalog is the gateway's catalog of SLNG models and voices: per
// model its kind, regions, encodings, sample rates, languages, voices, what
// its route sends, and where each fact comes from. SLNG publishes no
// machine-readable catalog, so the gateway carries one: Default, built in
// from what SLNG and its clients document, or an operator's YAML file
// (Parse, Watch), re-read when it changes.
//
// Every list of a Model says whether it is complete. A complete list is
// all the model offers, and Model.Check refuses anything outside it; an
// incomplete one is what the sources show, and Check lets anything else
// through for SLNG to decide. Nothing else is checked: the catalog does not
// judge languages or regions, and does not know about callers (the
// gateway's access policy filters what it lists).
//
// A Catalog is immutable once built and may be shared by any number of
// goroutines; so are its Models, which callers must not modify. Live's
// methods may be called concurrently.
package catalog
