# shellcheck shell=bash
# Shared by the style checks (sourced, not run). Exit codes follow meson's 'exitcode'
# protocol: 0 pass, 1 fail, 77 skip.

style_skip() {
    printf 'SKIP: %s\n' "$*"
    exit 77
}

style_die() {
    printf 'ERROR: %s\n' "$*"
    exit 1
}

# A meson build directory (build/, build-infra/, ...) is recognised by meson-private/: its
# generated files are not ours to check, whatever it is called and whether or not it is ignored.
style_in_build_dir() {
    local path=$1 dir
    dir=${path%%/*}
    [[ "$dir" != "$path" && -d "$STYLE_ROOT/$dir/meson-private" ]]
}

# Print, one per line and relative to $STYLE_ROOT, the files matching the given glob patterns
# (e.g. '*.c' 'meson.build'): tracked plus untracked-but-not-ignored files of the git checkout,
# or every matching file found when the tree is not a git checkout.
style_list_files() {
    local path name
    local -a find_expr=()

    if git -C "$STYLE_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # Pathspecs are relative to the current directory: list from the root itself.
        (cd "$STYLE_ROOT" && git ls-files -co --exclude-standard -- "$@")
    else
        for name in "$@"; do
            ((${#find_expr[@]} == 0)) || find_expr+=(-o)
            find_expr+=(-name "$name")
        done
        (cd "$STYLE_ROOT" &&
            find . \( -name .git -o -path './build*' -o -path ./_build \) -prune -o \
                -type f \( "${find_expr[@]}" \) -print | sed 's|^\./||')
    fi | sort -u | while IFS= read -r path; do
        # ls-files -c also lists tracked files deleted from the work tree.
        [[ -f "$STYLE_ROOT/$path" ]] || continue
        style_in_build_dir "$path" && continue
        printf '%s\n' "$path"
    done
}

# Sets STYLE_ROOT from the first argument (the source root), defaulting to the checkout that
# holds this script.
style_init() {
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    STYLE_ROOT=${1:-$here/../..}
    [[ -d "$STYLE_ROOT" ]] || style_die "source root '$STYLE_ROOT' is not a directory"
    STYLE_ROOT=$(cd "$STYLE_ROOT" && pwd)
}
