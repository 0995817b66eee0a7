#!/usr/bin/env bash
# source launch_container.sh $TXT_DB $IMG_DB $OUTPUT $PRETRAIN_DIR [command ...]
#
# As the IAIS/UNITER README: runs the package's Docker image (itr-iais, built from the repository root with
# `docker build -f docker/iais/Dockerfile -t itr-iais .`; $ITR_IAIS_IMAGE picks another tag) with the original
# mounts: $TXT_DB -> /txt (read-only), $IMG_DB -> /img (read-only), $PRETRAIN_DIR -> /pretrain (read-only),
# $OUTPUT -> /storage; working directory /src/packages/iais, where the original script names and config/ are.
# Respects $CUDA_VISIBLE_DEVICES (default: all GPUs). Without a command: an interactive shell, as the original.
# The source tree is part of the image (the original mounted $(pwd) at /src instead).
# Inside: `torchrun --nproc_per_node 8 train_itm_hard_negatives.py --config ...` (horovodrun prints that line).

_itr_iais_launch() {
    if [ $# -lt 4 ]; then
        echo "error: usage: source launch_container.sh \$TXT_DB \$IMG_DB \$OUTPUT \$PRETRAIN_DIR [command ...]; found $# argument(s)" >&2
        return 2
    fi
    local txt_db=$1 img_db=$2 output=$3 pretrain=$4
    shift 4
    local name dir
    for name in TXT_DB IMG_DB PRETRAIN_DIR; do
        case $name in
            TXT_DB) dir=$txt_db ;;
            IMG_DB) dir=$img_db ;;
            PRETRAIN_DIR) dir=$pretrain ;;
        esac
        if [ ! -d "$dir" ]; then
            echo "error: \$$name: expected a folder, found ${dir:-nothing} (not a folder)" >&2
            return 2
        fi
    done
    if ! mkdir -p "$output" 2>/dev/null || [ ! -w "$output" ]; then
        echo "error: \$OUTPUT: expected a writable folder, found $output" >&2
        return 2
    fi
    if ! command -v docker >/dev/null 2>&1; then
        echo "error: docker: expected the docker command on PATH, found none (https://docs.docker.com/install/)" >&2
        return 2
    fi
    local gpus=${CUDA_VISIBLE_DEVICES:-all}
    local image=${ITR_IAIS_IMAGE:-itr-iais}
    local interactive=()
    if [ -t 0 ] && [ -t 1 ]; then
        interactive=(-it)
    fi
    docker run --gpus "\"device=$gpus\"" --ipc=host --rm "${interactive[@]}" \
        --mount "src=$(cd "$output" && pwd),dst=/storage,type=bind" \
        --mount "src=$(cd "$pretrain" && pwd),dst=/pretrain,type=bind,readonly" \
        --mount "src=$(cd "$txt_db" && pwd),dst=/txt,type=bind,readonly" \
        --mount "src=$(cd "$img_db" && pwd),dst=/img,type=bind,readonly" \
        -e "NVIDIA_VISIBLE_DEVICES=$gpus" \
        -w /src/packages/iais "$image" "$@"
}

_itr_iais_launch "$@"
_itr_iais_status=$?
unset -f _itr_iais_launch
if (return 0 2>/dev/null); then
    return $_itr_iais_status
else
    exit $_itr_iais_status
fi
