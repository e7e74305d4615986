package service

import (
	"context"
	"fmt"
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
		if len(s.cfg.ModelAllowlist) > 0 && !s.allowed[m.Model] {
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
// the catalog says model does not offer (catalog.Model.Check), so that the
// stream fails before any SLNG dial rather than on SLNG's error. f is the
// config's format before defaults; rate is the default sample rate. A
// model outside the catalog is not checked.
func (s *Server) checkCatalog(v *violations, model, voice string, f *speechv1.AudioFormat, rate int32) {
	m := s.catalog().Lookup(model)
	if m == nil {
		return
	}
	enc := f.GetEncoding()
	if enc == speechv1.AudioEncoding_AUDIO_ENCODING_UNSPECIFIED {
		enc = speechv1.AudioEncoding_AUDIO_ENCODING_LINEAR16
	}
	if r := f.GetSampleRateHz(); r != 0 {
		rate = r
	}
	fields := map[catalog.Field]string{
		catalog.FieldVoice:      "config.voice",
		catalog.FieldEncoding:   "config.format.encoding",
		catalog.FieldSampleRate: "config.format.sample_rate_hz",
	}
	for _, p := range m.Check(catalog.Request{Voice: voice, Encoding: encodingNames[enc], SampleRate: int(rate)}) {
		msg := p.Message
		if p.Field == catalog.FieldEncoding {
			// In the API's names, which the caller sent.
			offered := make([]string, 0, len(m.Encodings))
			for _, e := range m.Encodings {
				offered = append(offered, encodingsByName[e].String())
			}
			msg = fmt.Sprintf("model %s does not take %s; it takes %s", m.Model, enc, strings.Join(offered, ", "))
		}
		v.add(fields[p.Field], "%s", msg)
	}
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
