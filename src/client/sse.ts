// Server-Sent Events from a fetch body, parsed by eventsource-parser (the WHATWG rules: comments, multi-line data, ids).
import { EventSourceParserStream, type EventSourceMessage } from 'eventsource-parser/stream';

export type { EventSourceMessage };

/** Messages of an event stream; leaving the loop early cancels the body (the connection closes). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<EventSourceMessage> {
  const reader = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
