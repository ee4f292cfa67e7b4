// The error a tool throws for bad command-line input: the CLI prints it with the tool's
// usage and exits 2, unlike a runtime failure (exit 1).

export class UsageError extends Error {}

/** parseArgs' own errors (unknown option, missing value) are usage errors too. */
export function isUsageError(err: unknown): err is Error {
  return err instanceof UsageError || ((err as { code?: string })?.code?.startsWith('ERR_PARSE_ARGS') ?? false);
}
