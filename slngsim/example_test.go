package slngsim_test

import (
	"fmt"

	"github.com/speech-gateway/speech-gateway/slngsim"
)

// Start a simulator for an integration test: point the client under test
// at URL, and Close it at the end.
func ExampleStart() {
	sim, err := slngsim.Start(slngsim.Options{APIKey: "test-key"})
	if err != nil {
		panic(err)
	}
	defer sim.Close()
	fmt.Println(sim.URL()[:5])
	// Output: ws://
}

// Serve every model as SLNG's own clients report its route behaves: the
// realistic rule, by provider. A test can take a profile and change one
// field of it.
func ExampleRealistic() {
	for _, model := range []string{"deepgram/aura:2", "soniox/tts-rt:v1", "cartesia/sonic:2", "acme/speech:1"} {
		p := slngsim.Realistic(model)
		fmt.Printf("%s: %s, turns end with %s\n", model, p.Name, p.TurnEnd)
	}
	sim, err := slngsim.Start(slngsim.Options{ProfileFor: slngsim.Realistic})
	if err != nil {
		panic(err)
	}
	defer sim.Close()
	// Output:
	// deepgram/aura:2: realistic:deepgram, turns end with flushed+audio_end
	// soniox/tts-rt:v1: realistic:soniox, turns end with audio_end
	// cartesia/sonic:2: realistic:cartesia, turns end with close
	// acme/speech:1: realistic, turns end with flushed
}
