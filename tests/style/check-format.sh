#!/usr/bin/env bash
# Style test: every C source of the tree must be formatted as the repo's .clang-format says.
#
# Usage: check-format.sh [SOURCE-ROOT]
# Exit status: 0 all formatted, 1 some file is not (each is named, the first few with a diff),
# 77 skipped (clang-format missing, or no C sources yet). Fix with:
#   clang-format -i --style=file:SOURCE-ROOT/.clang-format FILE...
set -euo pipefail

# shellcheck source=tests/style/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
style_init "${1:-}"

max_diffs=3
config="$STYLE_ROOT/.clang-format"

command -v clang-format >/dev/null ||
    style_skip "clang-format not found (Debian: apt-get install clang-format)"
[[ -f "$config" ]] || style_die "no .clang-format at the source root '$STYLE_ROOT'"
style="--style=file:$config"
# An unreadable or invalid config would make every file look misformatted: say so once.
if ! err=$(clang-format "$style" --dump-config 2>&1 >/dev/null) || [[ -n "$err" ]]; then
    style_die "clang-format $(clang-format --version | sed 's/.*version //') rejects $config: $err"
fi

mapfile -t files < <(style_list_files '*.c' '*.h')
((${#files[@]} > 0)) || style_skip "no C sources under $STYLE_ROOT yet"

bad=()
for f in "${files[@]}"; do
    if ! clang-format "$style" --dry-run --Werror "$STYLE_ROOT/$f" >/dev/null 2>&1; then
        bad+=("$f")
    fi
done

if ((${#bad[@]} == 0)); then
    echo "ok: ${#files[@]} C source files are clang-formatted"
    exit 0
fi

for f in "${bad[@]}"; do
    echo "not clang-formatted: $f"
done
for f in "${bad[@]:0:max_diffs}"; do
    echo
    diff -u --label "$f" --label "$f (clang-format)" \
        "$STYLE_ROOT/$f" <(clang-format "$style" "$STYLE_ROOT/$f") || true
done
((${#bad[@]} <= max_diffs)) || echo "... diffs of $((${#bad[@]} - max_diffs)) more files omitted"
echo
echo "FAIL: ${#bad[@]} of ${#files[@]} C source files are not clang-formatted;" \
    "fix with: clang-format -i --style=file:.clang-format FILE..."
exit 1
