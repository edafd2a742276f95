// How output bytes appear in JSON: UTF-8 text (invalid bytes become U+FFFD) or exact base64.
import { StringDecoder } from 'node:string_decoder';

export type OutputEncoding = 'utf8' | 'base64';

export function encodeOutput(b: Buffer, enc: OutputEncoding): string {
  return enc === 'base64' ? b.toString('base64') : b.toString('utf8');
}

/** For streams: never splits a UTF-8 character across two events. */
export class ChunkEncoder {
  private readonly decoder: StringDecoder | undefined;
  constructor(enc: OutputEncoding) {
    this.decoder = enc === 'utf8' ? new StringDecoder('utf8') : undefined;
  }

  write(b: Buffer): string {
    return this.decoder ? this.decoder.write(b) : b.toString('base64');
  }

  end(): string {
    return this.decoder ? this.decoder.end() : '';
  }
}
