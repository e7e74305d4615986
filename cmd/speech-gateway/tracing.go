package main

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
)

// tracing is OpenTelemetry as the environment configures it.
type tracing struct {
	provider   *sdktrace.TracerProvider
	propagator propagation.TextMapPropagator
	// fields describe the exporter for the start-up log.
	fields []zap.Field
}

// setupTracing starts OpenTelemetry tracing when the standard environment
// asks for it: OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, or OTEL_TRACES_EXPORTER set to
// an exporter; never with OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none. It returns nil when tracing is off.
//
// OpenTelemetry's own libraries read the rest, as every SDK does:
// autoexport the exporter (OTEL_TRACES_EXPORTER: otlp or console) and the
// OTLP protocol (OTEL_EXPORTER_OTLP_PROTOCOL or its _TRACES_ form: grpc, or
// http/protobuf, the default), the OTLP exporters their endpoint,
// headers, TLS and timeout, the SDK the sampler (OTEL_TRACES_SAMPLER) and
// the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), and autoprop
// the propagators (OTEL_PROPAGATORS, default tracecontext,baggage). An
// exporter, protocol or propagator they do not know is an error, so that
// a typo does not pass for tracing that is off.
func setupTracing(ctx context.Context, getenv func(string) string) (*tracing, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil
	}
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch {
	case exporter == "none":
		return nil, nil
	case exporter != "", getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "", getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
	default:
		return nil, nil
	}
	prop := propagation.TextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	propNames := "tracecontext,baggage"
	if v := getenv("OTEL_PROPAGATORS"); v != "" {
		propNames = v
		names := strings.Split(v, ",")
		for i := range names {
			names[i] = strings.TrimSpace(names[i])
		}
		var err error
		if prop, err = autoprop.TextMapPropagator(names...); err != nil {
			return nil, fmt.Errorf("OTEL_PROPAGATORS=%q: %w", v, err)
		}
	}
	name, protocol := exporter, ""
	if name == "" {
		name = "otlp"
	}
	if name == "otlp" {
		protocol = getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if protocol == "" {
			protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if protocol == "" {
			protocol = "http/protobuf"
		}
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		// The libraries' errors do not say which value they refused.
		return nil, fmt.Errorf("exporter %q (OTEL_TRACES_EXPORTER), protocol %q (OTEL_EXPORTER_OTLP_PROTOCOL): %w", name, protocol, err)
	}
	res, err := resource.Merge(resource.Default(), resource.Environment())
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	fields := []zap.Field{zap.String("exporter", name), zap.String("propagators", propNames)}
	if protocol != "" {
		fields = append(fields, zap.String("protocol", protocol))
	}
	return &tracing{provider: tp, propagator: prop, fields: fields}, nil
}
