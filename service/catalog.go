package service

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/speech-gateway/speech-gateway/catalog"
	speechv1 "github.com/speech-gateway/speech-gateway/gen/slng/speech/v1"
)

// The access policy's RPCs that serve each kind of model: a model is
// listed for a caller that may use it with any of them.
var kindRPCs = map[catalog.Kind][]string{
	catalog.TTS: {"Synthesize", "SynthesizeText"},
	catalog.STT: {"Transcribe"},
}

// ListModels implements CatalogService: the catalogued models the caller
// may use (the access policy and the model allowlist), ordered by id.
func (s *Server) ListModels(ctx context.Context, req *speechv1.ListModelsRequest) (*speechv1.ListModelsResponse, error) {
	var kind catalog.Kind
	switch req.GetKind() {
	case speechv1.ModelKind_MODEL_KIND_UNSPECIFIED:
	case speechv1.ModelKind_MODEL_KIND_TTS:
		kind = catalog.TTS
	case speechv1.ModelKind_MODEL_KIND_STT:
		kind = catalog.STT
	default:
		return nil, s.catalogStatus(ctx, invalid("kind", "unknown model kind %d", int32(req.GetKind())))
	}
	resp := &speechv1.ListModelsResponse{}
	for _, m := range s.visibleModels(ctx) {
		if kind == "" || m.Kind == kind {
			resp.Models = append(resp.Models, s.modelInfo(m))
		}
	}
	return resp, nil
}

// ListVoices implements CatalogService: the voices of one catalogued TTS
// model the caller may use, or of all of them.
func (s *Server) ListVoices(ctx context.Context, req *speechv1.ListVoicesRequest) (*speechv1.ListVoicesResponse, error) {
	var models []*catalog.Model
	for _, m := range s.visibleModels(ctx) {
		if (req.GetModel() == "" && m.Kind == catalog.TTS) || m.Model == req.GetModel() {
			models = append(models, m)
		}
	}
	switch {
	case req.GetModel() == "":
	case len(models) == 0:
		return nil, s.catalogStatus(ctx, invalid("model", "the catalog lists no model %q that this caller may use (CatalogService.ListModels lists them)",
			truncate(req.GetModel(), 140)))
	case models[0].Kind != catalog.TTS:
		return nil, s.catalogStatus(ctx, invalid("model", "%s is a speech-to-text model: voices are for text-to-speech models", models[0].Model))
	}
	resp := &speechv1.ListVoicesResponse{Complete: true}
	for _, m := range models {
		resp.Complete = resp.Complete && m.VoicesComplete
		resp.Voices = append(resp.Voices, voiceInfos(m, m.VoicesFor(req.GetLanguage()))...)
	}
	return resp, nil
}

// catalog is the catalog in force, nil for none.
func (s *Server) catalog() *catalog.Catalog {
	if s.cfg.Catalog == nil {
		return nil
	}
	return s.cfg.Catalog()
}

// visibleModels are the catalogued models the caller of ctx may use: on
// this gateway (the model allowlist) and under the access policy, with
// any RPC of the model's kind.
func (s *Server) visibleModels(ctx context.Context) []*catalog.Model {
	caller := s.callerOf(ctx)
	var out []*catalog.Model
	for _, m := range s.catalog().Models() {
		if !s.modelEnabled(m.Model) {
			continue
		}
		if s.cfg.Callers != nil && !anyRPCAllowed(s.cfg.Callers, caller, kindRPCs[m.Kind], m.Model) {
			continue
		}
		out = append(out, m)
	}
	return out
}

func anyRPCAllowed(c Callers, caller string, rpcs []string, model string) bool {
	for _, rpc := range rpcs {
		if c.Allows(caller, rpc, model) {
			return true
		}
	}
	return false
}

// catalogStatus is the status of a failed catalog call.
func (s *Server) catalogStatus(ctx context.Context, err error) error {
	st, _ := toStatus(err, ctx.Err(), streamMeta{caller: s.callerOf(ctx)})
	return st.Err()
}

// checkCatalog adds a violation for each value of a stream's config that
// the catalog says model does not offer (catalog.Model.Check) and the
// gateway cannot convert, so that the stream fails before any SLNG dial
// rather than on SLNG's error, and returns the format SLNG is asked for
// (upstreamFormat), which is what the catalog judges. f is the config's
// format, defaults filled in. A model outside the catalog is not checked.
func (s *Server) checkCatalog(v *violations, model, voice string, f *speechv1.AudioFormat, stt bool) *speechv1.AudioFormat {
	up := s.upstreamFormat(model, f, stt)
	m := s.catalog().Lookup(model)
	if m == nil {
		return up
	}
	fields := map[catalog.Field]string{
		catalog.FieldVoice:      "config.voice",
		catalog.FieldEncoding:   "config.format.encoding",
		catalog.FieldSampleRate: "config.format.sample_rate_hz",
	}
	for _, p := range m.Check(catalog.Request{Voice: voice, Encoding: encodingNames[up.Encoding], SampleRate: int(up.SampleRateHz)}) {
		msg := p.Message
		switch p.Field {
		case catalog.FieldEncoding:
			// In the API's names, which the caller sent.
			offered := make([]string, 0, len(m.Encodings))
			for _, e := range m.Encodings {
				offered = append(offered, encodingsByName[e].String())
			}
			msg = fmt.Sprintf("model %s does not take %s; it takes %s", m.Model, up.Encoding, strings.Join(offered, ", "))
		case catalog.FieldSampleRate:
			if !convertible(up.Encoding) {
				msg += fmt.Sprintf(" (the gateway resamples LINEAR16, MULAW and ALAW, not %s)", up.Encoding)
			}
		}
		v.add(fields[p.Field], "%s", msg)
	}
	return up
}

// upstreamFormat is the format SLNG is asked to produce (Synthesize) or
// take (Transcribe, stt) for a stream whose audio is in f, defaults filled
// in: f itself, mono, but where the gateway converts it.
//
// Transcribe's G.711 always goes up as LINEAR16, which SLNG's STT bridge
// takes (and G.711 it does not). Beyond that, a model in the catalog
// whose complete lists lack f's encoding or rate gets, when the gateway
// can convert f's encoding (LINEAR16, MULAW, ALAW), LINEAR16 if it offers
// it (a G.711 encoding otherwise, the one asked for first), at the
// nearest rate it offers at or above f's (else the nearest below), so
// that nothing of the band asked for is lost where it can be kept. A
// compressed encoding is never converted: the catalog check refuses it.
// A model outside the catalog gets f, and SLNG decides.
func (s *Server) upstreamFormat(model string, f *speechv1.AudioFormat, stt bool) *speechv1.AudioFormat {
	linear16 := speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	up := &speechv1.AudioFormat{Encoding: f.GetEncoding(), SampleRateHz: f.GetSampleRateHz(), Channels: 1}
	if stt && g711Laws[up.Encoding] != 0 {
		up.Encoding = linear16
	}
	m := s.catalog().Lookup(model)
	if m == nil || !convertible(up.Encoding) {
		return up
	}
	offers := func(enc speechv1.AudioEncoding) bool {
		return !m.EncodingsComplete || slices.Contains(m.Encodings, encodingNames[enc])
	}
	rateOK := !m.SampleRatesComplete || slices.Contains(m.SampleRates, int(up.SampleRateHz))
	if offers(up.Encoding) && rateOK {
		return up
	}
	// Converting anyway: from (or to) LINEAR16, which adds no G.711
	// quantization of its own, else a G.711 law, the one asked for first;
	// an encoding the catalog lists before one it merely does not rule
	// out.
	candidates := []speechv1.AudioEncoding{linear16}
	if !stt {
		candidates = append(candidates, up.Encoding, speechv1.AudioEncoding_AUDIO_ENCODING_MULAW, speechv1.AudioEncoding_AUDIO_ENCODING_ALAW)
	}
	enc, found := speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED, false
	for _, listed := range []bool{true, false} {
		for _, e := range candidates {
			if !found && (slices.Contains(m.Encodings, encodingNames[e]) || (!listed && offers(e))) {
				enc, found = e, true
			}
		}
	}
	if !found {
		return up // nothing to convert from: refused
	}
	up.Encoding = enc
	if !rateOK {
		up.SampleRateHz = int32(nearestRate(m.SampleRates, int(up.SampleRateHz)))
	}
	return up
}

// nearestRate is the rate of rates nearest to rate at or above it, else
// the highest; rate itself when rates is empty.
func nearestRate(rates []int, rate int) int {
	above, below := 0, 0
	for _, r := range rates {
		switch {
		case r >= rate && (above == 0 || r < above):
			above = r
		case r < rate && r > below:
			below = r
		}
	}
	switch {
	case above != 0:
		return above
	case below != 0:
		return below
	}
	return rate
}

// modelInfo is the API's view of m on this gateway.
func (s *Server) modelInfo(m *catalog.Model) *speechv1.ModelInfo {
	info := &speechv1.ModelInfo{
		Model:               m.Model,
		Kind:                modelKinds[m.Kind],
		DisplayName:         m.DisplayName,
		Regions:             m.Regions,
		RegionsComplete:     m.RegionsComplete,
		EncodingsComplete:   m.EncodingsComplete,
		SampleRatesComplete: m.SampleRatesComplete,
		Languages:           m.Languages,
		LanguagesComplete:   m.LanguagesComplete,
		Voices:              voiceInfos(m, m.Voices),
		VoicesComplete:      m.VoicesComplete,
		DefaultVoice:        m.DefaultVoice,
		Sends: &speechv1.ModelSends{
			Partials:     sent(m.Sends.Partials),
			UtteranceEnd: sent(m.Sends.UtteranceEnd),
			Timings:      sent(m.Sends.Timings),
		},
		GatewayDefault: (m.Kind == catalog.TTS && m.Model == s.cfg.DefaultTTSModel) ||
			(m.Kind == catalog.STT && m.Model == s.cfg.DefaultSTTModel),
		Source: m.Source,
		Notes:  m.Notes,
	}
	for _, e := range m.Encodings {
		info.Encodings = append(info.Encodings, encodingsByName[e])
	}
	for _, r := range m.SampleRates {
		info.SampleRatesHz = append(info.SampleRatesHz, int32(r))
	}
	return info
}

var modelKinds = map[catalog.Kind]speechv1.ModelKind{
	catalog.TTS: speechv1.ModelKind_MODEL_KIND_TTS,
	catalog.STT: speechv1.ModelKind_MODEL_KIND_STT,
}

// encodingsByName are the API's encodings by SLNG name (encodingNames,
// inverted).
var encodingsByName = func() map[string]speechv1.AudioEncoding {
	out := map[string]speechv1.AudioEncoding{}
	for e, name := range encodingNames {
		out[name] = e
	}
	return out
}()

func voiceInfos(m *catalog.Model, voices []catalog.Voice) []*speechv1.Voice {
	out := make([]*speechv1.Voice, 0, len(voices))
	for _, v := range voices {
		out = append(out, &speechv1.Voice{VoiceId: v.ID, Model: m.Model, DisplayName: v.Name, Language: v.Language})
	}
	return out
}

func sent(b *bool) speechv1.Sent {
	switch {
	case b == nil:
		return speechv1.Sent_SENT_UNSPECIFIED
	case *b:
		return speechv1.Sent_SENT_YES
	}
	return speechv1.Sent_SENT_NO
}
