#!/usr/bin/env bash
# Style test: the basic .editorconfig rules that no compiler checks.
#
#   C sources (*.c, *.h), meson.build, meson_options.txt and the shell scripts (*.sh, run,
#   .ci/run): no trailing whitespace, no tab characters, no CR (LF line ends), a final newline.
#   C sources: at most 100 columns per line.
#
# Usage: check-editorconfig.sh [SOURCE-ROOT]
# Exit status: 0 clean, 1 problems (each printed as FILE:LINE: problem), 77 nothing to check.
set -euo pipefail

# shellcheck source=tests/style/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
style_init "${1:-}"

max_columns=100
max_reports_per_check=5 # per file and check, so one bad file cannot flood the log

mapfile -t files < <(style_list_files '*.c' '*.h' 'meson.build' 'meson_options.txt' '*.sh' \
    'run' '.ci/run')
((${#files[@]} > 0)) || style_skip "no files to check under $STYLE_ROOT"

problems=0
bad_files=0

# report FILE PROBLEM: print grep -n output lines ("LINE:text") as FILE:LINE: PROBLEM.
report() {
    local file=$1 problem=$2 line n=0
    while IFS= read -r line; do
        n=$((n + 1))
        ((n > max_reports_per_check)) && continue
        echo "$file:${line%%:*}: $problem"
    done
    if ((n > max_reports_per_check)); then
        echo "$file: ... $((n - max_reports_per_check)) more lines with: $problem"
    fi
    problems=$((problems + n))
}

for f in "${files[@]}"; do
    path="$STYLE_ROOT/$f"
    before=$problems
    # Character (not byte) columns: GNU grep counts characters in a UTF-8 locale.
    report "$f" "trailing whitespace" < <(LC_ALL=C.UTF-8 grep -nE '[[:blank:]]+$' "$path" || true)
    report "$f" "tab character (indent with spaces)" < <(grep -nP '\t' "$path" || true)
    report "$f" "CR line end (use LF)" < <(grep -nP '\r' "$path" || true)
    case "$f" in
    *.c | *.h)
        report "$f" "longer than $max_columns columns" \
            < <(LC_ALL=C.UTF-8 grep -nE "^.{$((max_columns + 1)),}" "$path" || true)
        ;;
    esac
    if [[ -s "$path" && $(tail -c 1 "$path" | wc -l) -eq 0 ]]; then
        echo "$f: no newline at end of file"
        problems=$((problems + 1))
    fi
    ((problems == before)) || bad_files=$((bad_files + 1))
done

if ((problems == 0)); then
    echo "ok: ${#files[@]} files follow the .editorconfig rules checked here"
    exit 0
fi
echo
echo "FAIL: $problems problems in $bad_files of ${#files[@]} files"
exit 1
