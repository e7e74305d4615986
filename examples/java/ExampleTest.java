import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import ai.slng.speech.v1.AudioEncoding;
import ai.slng.speech.v1.AudioFormat;
import ai.slng.speech.v1.CatalogServiceGrpc;
import ai.slng.speech.v1.ListModelsRequest;
import ai.slng.speech.v1.ListModelsResponse;
import ai.slng.speech.v1.ListVoicesRequest;
import ai.slng.speech.v1.ListVoicesResponse;
import ai.slng.speech.v1.ModelInfo;
import ai.slng.speech.v1.ModelKind;
import ai.slng.speech.v1.RecognitionConfig;
import ai.slng.speech.v1.SpeechToTextServiceGrpc;
import ai.slng.speech.v1.SynthesisConfig;
import ai.slng.speech.v1.SynthesizeRequest;
import ai.slng.speech.v1.SynthesizeResponse;
import ai.slng.speech.v1.SynthesizeTextRequest;
import ai.slng.speech.v1.TextInput;
import ai.slng.speech.v1.TextToSpeechServiceGrpc;
import ai.slng.speech.v1.TranscribeRequest;
import ai.slng.speech.v1.TranscribeResponse;
import ai.slng.speech.v1.TurnFailed;
import ai.slng.speech.v1.Voice;
import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Calls speech-gateway from Java: the catalog of the models and voices it may
 * use, a bidi Synthesize session, a Transcribe of its audio, and an error
 * decoded from its google.rpc details. The gateway's
 * address comes from SPEECH_GATEWAY_ADDR. It compiles against the
 * speech-gateway-api jar, and the com.google.rpc classes of the
 * speech-gateway-googleapis-rpc jar (docs/clients.md).
 */
class ExampleTest {
  static final List<String> TURNS = List.of("Hello from Java.", "A second turn on the same stream.");
  static final AudioFormat FORMAT =
      AudioFormat.newBuilder().setEncoding(AudioEncoding.AUDIO_ENCODING_LINEAR16).setSampleRateHz(16000).build();
  static ManagedChannel channel;

  @BeforeAll
  static void connect() {
    String addr = System.getenv().getOrDefault("SPEECH_GATEWAY_ADDR", "localhost:50051");
    // Retry UNAVAILABLE only, for SynthesizeText; gRPC retries a stream only
    // before its first response. Ping every 30 s: the server allows 10 s.
    Map<String, Object> retry = Map.of(
        "maxAttempts", 3.0, "initialBackoff", "0.5s", "maxBackoff", "5s",
        "backoffMultiplier", 2.0, "retryableStatusCodes", List.of("UNAVAILABLE"));
    Map<String, Object> serviceConfig = Map.of("methodConfig", List.of(Map.of(
        "name", List.of(Map.of("service", "slng.speech.v1.TextToSpeechService", "method", "SynthesizeText")),
        "retryPolicy", retry)));
    channel = NettyChannelBuilder.forTarget(addr)
        .usePlaintext()
        .keepAliveTime(30, TimeUnit.SECONDS)
        .keepAliveTimeout(10, TimeUnit.SECONDS)
        // A fixed window turns off flow-control tuning and its pings; audio
        // needs little bandwidth.
        .flowControlWindow(1 << 20)
        .defaultServiceConfig(serviceConfig)
        .enableRetry()
        .build();
  }

  @AfterAll
  static void close() throws InterruptedException {
    channel.shutdown().awaitTermination(5, TimeUnit.SECONDS);
  }

  @Test
  void catalog() {
    // The text-to-speech models this caller may use, and the English voices
    // of the gateway's default one.
    CatalogServiceGrpc.CatalogServiceBlockingStub stub =
        CatalogServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
    ListModelsResponse models =
        stub.listModels(ListModelsRequest.newBuilder().setKind(ModelKind.MODEL_KIND_TTS).build());
    ModelInfo def = models.getModelsList().stream().filter(ModelInfo::getGatewayDefault).findFirst().orElseThrow();
    System.out.println(models.getModelsCount() + " text-to-speech models; the default is " + def.getModel()
        + ", with " + def.getVoicesCount() + " voices");
    ListVoicesResponse voices =
        stub.listVoices(ListVoicesRequest.newBuilder().setModel(def.getModel()).setLanguage("en").build());
    List<String> ids = new ArrayList<>();
    for (Voice v : voices.getVoicesList()) {
      ids.add(v.getVoiceId());
    }
    System.out.println(ids.size() + " English voices (complete: " + voices.getComplete() + "), e.g. " + ids.get(0));
    assertTrue(ids.contains(def.getDefaultVoice()), def.getDefaultVoice() + " in " + ids);
  }

  @Test
  void synthesizeThenTranscribe() throws Exception {
    // Two turns on one bidi Synthesize stream.
    ByteArrayOutputStream audio = new ByteArrayOutputStream();
    CompletableFuture<Void> done = new CompletableFuture<>();
    StreamObserver<SynthesizeRequest> requests = TextToSpeechServiceGrpc.newStub(channel)
        .withDeadlineAfter(30, TimeUnit.SECONDS)
        .synthesize(new StreamObserver<SynthesizeResponse>() {
          @Override public void onNext(SynthesizeResponse r) {
            if (r.hasAudio()) {
              audio.writeBytes(r.getAudio().getData().toByteArray());
            } else if (r.hasTurnFailed()) {
              // The stream goes on with the next turn; this one produced no
              // complete audio. Here every turn must succeed.
              TurnFailed f = r.getTurnFailed();
              done.completeExceptionally(new AssertionError("turn " + f.getTurnId() + " failed: "
                  + Status.fromCodeValue(f.getCode()).getCode() + " " + f.getReason() + ": " + f.getMessage()));
            }
          }
          @Override public void onError(Throwable t) { done.completeExceptionally(t); }
          @Override public void onCompleted() { done.complete(null); }
        });
    requests.onNext(SynthesizeRequest.newBuilder()
        .setConfig(SynthesisConfig.newBuilder().setFormat(FORMAT)).build());
    for (String text : TURNS) {
      requests.onNext(SynthesizeRequest.newBuilder()
          .setText(TextInput.newBuilder().setText(text).setFlush(true)).build());
    }
    requests.onCompleted();
    done.get(30, TimeUnit.SECONDS);

    // Transcribe that audio in 100 ms chunks.
    List<String> finals = new ArrayList<>();
    CompletableFuture<Void> transcribed = new CompletableFuture<>();
    StreamObserver<TranscribeRequest> up = SpeechToTextServiceGrpc.newStub(channel)
        .withDeadlineAfter(30, TimeUnit.SECONDS)
        .transcribe(new StreamObserver<TranscribeResponse>() {
          @Override public void onNext(TranscribeResponse r) {
            if (r.hasFinalTranscript() && !r.getFinalTranscript().getText().isEmpty()) {
              finals.add(r.getFinalTranscript().getText());
            }
          }
          @Override public void onError(Throwable t) { transcribed.completeExceptionally(t); }
          @Override public void onCompleted() { transcribed.complete(null); }
        });
    up.onNext(TranscribeRequest.newBuilder()
        .setConfig(RecognitionConfig.newBuilder().setFormat(FORMAT)).build());
    byte[] pcm = audio.toByteArray();
    for (int off = 0; off < pcm.length; off += 3200) {
      up.onNext(TranscribeRequest.newBuilder()
          .setAudio(ByteString.copyFrom(pcm, off, Math.min(3200, pcm.length - off))).build());
    }
    up.onCompleted();
    transcribed.get(30, TimeUnit.SECONDS);
    System.out.println("transcribed: " + finals);
    assertEquals(TURNS, finals);
  }

  @Test
  void errorDetails() throws Exception {
    Iterator<SynthesizeResponse> it = TextToSpeechServiceGrpc.newBlockingStub(channel)
        .withDeadlineAfter(10, TimeUnit.SECONDS)
        .synthesizeText(SynthesizeTextRequest.newBuilder().setText("").build());
    try {
      while (it.hasNext()) {
        it.next();
      }
      fail("empty text was accepted");
    } catch (StatusRuntimeException e) {
      assertEquals(Status.Code.INVALID_ARGUMENT, e.getStatus().getCode());
      com.google.rpc.Status st = StatusProto.fromThrowable(e);
      ErrorInfo info = null;
      BadRequest bad = null;
      for (Any d : st.getDetailsList()) {
        if (d.is(ErrorInfo.class)) {
          info = d.unpack(ErrorInfo.class);
        } else if (d.is(BadRequest.class)) {
          bad = d.unpack(BadRequest.class);
        }
      }
      System.out.println("error: " + e.getStatus().getCode() + " " + info.getReason() + " " + bad.getFieldViolationsList());
      assertEquals("INVALID_REQUEST", info.getReason());
      assertEquals("speech-gateway", info.getDomain());
      assertTrue(bad.getFieldViolationsCount() > 0);
    }
  }
}
