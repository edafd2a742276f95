// The guest side of the files API: constant shell source run by the pack's busybox `sh` (the guest
// agent has no file messages). Operands are "$1", "$2", ...: paths never become part of the source.

/** Exit codes our scripts use for conditions the tools themselves would not report clearly. */
export const X_IS_DIR = 91;
export const X_NOT_DIR = 92;
export const X_RACE = 95;

/** $1 path: the bytes of a regular file (anything but a directory) on stdout. */
export const READ_FILE = `[ -d "$1" ] && { echo "emberd: $1: Is a directory" >&2; exit ${X_IS_DIR}; }
exec cat -- "$1"`;

/**
 * $1 final path, $2 its parent, $3 temporary file in the parent, $4 mode ('' = keep the replaced
 * file's mode, else 0644). stdin is written to $3, which is renamed over $1 only when complete:
 * readers never see a partial file and a failed upload leaves the old file (if any) untouched.
 */
export const WRITE_FILE = `[ -d "$1" ] && { echo "emberd: $1: Is a directory" >&2; exit ${X_IS_DIR}; }
if ! [ -d "$2" ]; then
  if [ -e "$2" ]; then echo "emberd: $2: Not a directory" >&2; exit ${X_NOT_DIR}; fi
  mkdir -p -- "$2" || exit 1
fi
m=$4
if [ -z "$m" ]; then if [ -f "$1" ]; then m=$(stat -L -c %a -- "$1"); else m=0644; fi; fi
cat > "$3" && chmod "$m" "$3" && mv -f -- "$3" "$1" && exit 0
s=$?; rm -f -- "$3"; exit $s`;

/** $1 directory: a tar stream of its contents (entries relative to it) on stdout. */
export const READ_TAR = `cd -- "$1" || exit 1
exec tar -c -f - .`;

/** $1 directory (created with its parents if missing): stdin is a tar stream extracted into it. */
export const WRITE_TAR = `if ! [ -d "$1" ]; then
  if [ -e "$1" ]; then echo "emberd: $1: Not a directory" >&2; exit ${X_NOT_DIR}; fi
  mkdir -p -- "$1" || exit 1
fi
exec tar -x -f - -C "$1"`;

/** One stat line per operand, in order: raw mode (hex), size, mtime (s), mtime (with ns). */
export const STAT_FORMAT = '%f %s %Y %y';

/**
 * $1 directory. For each of the three globs that together match every entry but . and ..: the
 * names, each NUL-terminated, an empty name (a lone NUL) and then one stat line per name. Names
 * cannot hold NUL, and stat lines do not hold names, so any name (newlines included) is parsed
 * unambiguously. One stat process per glob (xargs splits huge directories), not one per entry.
 */
export const LIST_DIR = `cd -- "$1" || exit 1
for p in '*' '.[!.]*' '..?*'; do
  set -- $p
  if [ "$#" -eq 1 ] && ! [ -e "$1" ] && ! [ -L "$1" ]; then continue; fi
  printf '%s\\0' "$@"
  printf '\\0'
  printf '%s\\0' "$@" | xargs -0 stat -c '${STAT_FORMAT}' -- || exit ${X_RACE}
done`;

/** $1 path, $2 "1" for recursive. A symlink is removed itself, never what it points to. */
export const DELETE = `if [ -d "$1" ] && ! [ -L "$1" ]; then
  if [ "$2" = 1 ]; then exec rm -rf -- "$1"; else exec rmdir -- "$1"; fi
fi
exec rm -- "$1"`;

/** The argv that runs `script` with `args` as its "$1", "$2", ... */
export const sh = (script: string, ...args: string[]): string[] => ['sh', '-c', script, 'sh', ...args];
