/**
 * Checks a TLS certificate and key before a listener binds, on
 * `node:crypto` (which Node, Bun and Deno ship): a clear error at start
 * rather than a failed handshake for every client, as some runtimes' TLS
 * reads a key only when the first client comes.
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import type { TlsSettings } from "../src/transport.ts";

function invalid(message: string, cause?: unknown): Error & { code: string } {
  return Object.assign(new Error(message, { cause }), { code: "invalid_argument" });
}

/** Throws (code `invalid_argument`) unless `cert` parses, `key` parses, and `key` is the certificate's own. */
export function checkTls(tls: TlsSettings): void {
  let certificate: X509Certificate;
  try {
    // The first certificate of a chain is the server's own.
    certificate = new X509Certificate(tls.cert);
  } catch (error) {
    throw invalid(`tls.cert holds no certificate that can be read: ${(error as Error).message}`, error);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(tls.key);
  } catch (error) {
    throw invalid(`tls.key holds no private key that can be read (an encrypted key is not supported): ${(error as Error).message}`, error);
  }
  if (!certificate.checkPrivateKey(key)) {
    throw invalid("tls.key is not the private key of the certificate in tls.cert");
  }
}
