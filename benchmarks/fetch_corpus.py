"""The public trace corpus: every Kineto / Chrome trace file in the histories of pytorch/kineto and
facebookresearch/HolisticTraceAnalysis (HTA) that a repository snapshot holds, one entry per distinct file content.

Each entry names the repository, the path, a commit at which that path holds the file, and the file's git blob id
(the sha1 of ``blob <size>\\0<bytes>``), which this script checks. The files are cached OUTSIDE the repository, in
``$CONVDOCTOR_CORPUS`` (default ``~/.cache/convdoctor-corpus``), as ``<owner>+<name>/<commit[:12]>/<path>``.

How the cache was built (the list below comes from the same mirrors):

    # bare snapshots of the two repositories (a ``git clone --mirror`` of each works the same)
    git clone --mirror https://github.com/pytorch/kineto kineto.git
    git clone --mirror https://github.com/facebookresearch/HolisticTraceAnalysis hta.git
    # every version of every trace-like file, deduplicated by blob:
    git --git-dir=kineto.git log --all --format=%H --name-only --diff-filter=AMR -- '*.json.gz' '*trace.json'
    # (one ``git rev-parse COMMIT:PATH`` and ``git cat-file -s`` per hit; configs and non-traces dropped)
    python benchmarks/fetch_corpus.py build --mirror pytorch/kineto=kineto.git \\
        --mirror facebookresearch/HolisticTraceAnalysis=hta.git

``build`` runs ``git --git-dir=MIRROR show COMMIT:PATH`` for each entry (``--github`` reads
raw.githubusercontent.com instead, for a machine without mirrors). ``list`` prints the cached paths; other scripts
(benchmarks/oracle.py) call ``cached()``.

Left out: the files of 4 MiB and more, which the snapshots used here do not carry (HTA's vision_transformer
rank-0..7, h100_trace, torchtitan_h100, mixed_files inference_rank_0 and rank-0, trace_file_list's first
inference_rank_1; Kineto's profiler/demo localhost.trace.json.gz), HTA's execution-trace file (not a Chrome trace)
and Kineto's stress-test configs (not traces).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import NamedTuple


class Entry(NamedTuple):
    repo: str
    path: str
    commit: str
    blob: str  # git blob id of the file's bytes

    @property
    def cache_path(self) -> Path:
        return cache_dir() / self.repo.replace("/", "+") / self.commit[:12] / self.path

    @property
    def label(self) -> str:
        """A short name: the repository's, the path's tail and the commit."""
        short = "kineto" if self.repo == "pytorch/kineto" else "hta"
        return f"{short}:{self.path.split('/', 2)[-1] if short == 'hta' else self.path}@{self.commit[:8]}"


CORPUS: tuple[Entry, ...] = (
    Entry("pytorch/kineto", "docs/traces/after_fix_trace.json", "00a807b71483565a8b6fb6185e5683b8803ae9c2", "5b7b13c334283fa8bf06266c3d09315b856ef986"),
    Entry("pytorch/kineto", "docs/traces/before_fix_trace.json", "00a807b71483565a8b6fb6185e5683b8803ae9c2", "db36f7b79aecc1efe17da4b02306b4b5addb8a35"),
    Entry("pytorch/kineto", "profiler/plugin/trace_viewer/tf_trace_viewer/data/trace.json", "ddeab29648c268e20bf264662cebb65fe9517b9c", "e1d57394e3594b68f73d3e5be56753d32503d80b"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_autograd_api_num_workers_0/worker0.pt.trace.json.gz", "025228426e3d453c4121a1cdde7f987785eae6a4", "4a9c9ae521a1f8191798905b447f044bbedb2f98"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_autograd_api_num_workers_4/worker0.pt.trace.json.gz", "025228426e3d453c4121a1cdde7f987785eae6a4", "69df6923094e010e1ff1e1f4d7fb8590f09eb841"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_num_workers_0/worker0.1623143089861.pt.trace.json.gz", "be239c044d2f4b62982e1ff64144097acd69f59a", "769c3eb7843639ac114d183e07304b6d44931452"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_num_workers_0/worker0.1623143566756.pt.trace.json.gz", "be239c044d2f4b62982e1ff64144097acd69f59a", "383a066433725823a57b0dfd047d718b65d4741b"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_num_workers_0/worker0.pt.trace.json.gz", "eebfef30bd735ce66c159f3a62f707cd25e260b1", "2d19c6342350710d5783d27a77c10445e8d8604e"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_num_workers_4/worker0.1623212756351.pt.trace.json.gz", "be239c044d2f4b62982e1ff64144097acd69f59a", "234cf25df597fb99765ee2a49978f5f3c4bbbaf9"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_num_workers_4/worker0.1623213129365.pt.trace.json.gz", "be239c044d2f4b62982e1ff64144097acd69f59a", "3e633b5fde9d2e99ea8b07a67771183b7011bbc5"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_num_workers_4/worker0.pt.trace.json.gz", "eebfef30bd735ce66c159f3a62f707cd25e260b1", "7bd25bd008f78fa05a7708de74cb675ecdfd465c"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_profiler_api_num_workers_0/worker0.pt.trace.json.gz", "025228426e3d453c4121a1cdde7f987785eae6a4", "d3fb4076d72dbbc52465ddc04fa83b849bf48435"),
    Entry("pytorch/kineto", "tb_plugin/samples/resnet50_profiler_api_num_workers_4/worker0.pt.trace.json.gz", "025228426e3d453c4121a1cdde7f987785eae6a4", "29dba67d0725d842b951f29a4cbe14e29cfb766b"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/amd_trace/mi250_minitoy_train_ROCm6_2_kineto.json.gz", "f9a648b4ac9b962d2572354b4539ef476bd00824", "5ac5659786d1793d7f95feb2308e37d96fe5aed5"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/call_stack/backward_thread.json", "c1235b4459e950e4fe6a91e2442fd34dc76c3324", "3a6b20082b7cc4c691c71173bef4a69e78a12d26"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz", "b8cce2cd9cbb56ccb1c352caec82d0e04c118425", "05cd72fe60f0b279ec3d593fda9dc56b59cf729f"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/cpu_only/rank-34.Jul_15_10_52_41.1074.pt.trace.json.gz", "dcd33669d383f812e626ead8e2ebbe1a08f9bd73", "1aff90f85c8777c5a4e1e8c461128191201d12d3"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/alexnet/benchmark_result_2869224_1695835535_trace.json.gz", "66e3c5475683bd5f2cc79884dfe9a60a085f5cb6", "4bcd84bf13cb6ac00b637a754aa44c465ed3aa44"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/cuda_event_sync/event_sync_trace.json.gz", "040e7991c5421edcc6b4e3f8d60cc2b0a5cfb5b5", "928583148447e74cbdc53125c8db3d331f33d871"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/cuda_event_sync/event_sync_trace.json.gz", "ec3abf17e1afbf2d443e504d0c9a9ee4c9c87a03", "a4a6c2d19ccff6653600ae5475dec3baaf00882e"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/cuda_event_sync_multi_stream/event_sync_trace.json.gz", "3111bcbcea8910c94195e1d7b15124ecd179f159", "d80adeb314005d496b5b871736a812c90bdb333c"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/end_to_end/simple_add/input/trace.json.gz", "e59533498f31af9ed99c4656e513fa68e86d8ebc", "55a16288d1419422d91af3cc678566a685d1f660"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/end_to_end/simple_add/output/overlaid_critical_path_trace.json.gz", "e59533498f31af9ed99c4656e513fa68e86d8ebc", "27b06fcea0119dd59562d2c5d4a588023aed122e"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/critical_path/end_to_end/simple_add/output/overlaid_critical_path_trace.json.gz", "55aa2d8b32f830f662e4ef2c8ed34310ab2b34a6", "aecf4ffd39f12ad2800714cecb2ddd845bb0e449"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/cupti_profiler/benchmark_result_924719_1679055439_trace.json.gz", "3aa8dd29777b28c8ace85ca356045723a9bc1e8c", "eac4fdc5b4a273714c796b5fdce332cbf6f50c1e"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/df_index_resolver/df_index_resolver.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "07019a1e8e6d026c4b834477b5691c2505badc1e"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/distributed_info_unavailable/distributed_info_not_found.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "e4ba3dab946d0519a076e09f91e5af5f22309bfa"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/execution_trace/benchmark_simple_add_trace.json.gz", "c24333b7405fbbfd3af598c5bbd11a5d4afa0969", "25e7be69e13d495b76f90e01730b210c32682f55"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/large_integer_trace/rank-70.Mar_25_20_48_12.2861.pt.trace.json.gz", "9474ec5334825e881d36b67d392e13bf6788ba6d", "409ef9917ee5fcdbf1c88a4c3588934608e1939a"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/mixed_files/rank_non_gpu.json.gz", "e1d94757f2b8dfc0a832190b057ac9d515a016de", "f702daa4ab9013d42a6b562a88a5e26d3783bedd"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/mixed_files/rank_not_found.json.gz", "e1d94757f2b8dfc0a832190b057ac9d515a016de", "8e469c1c80c3220447eaaa961f455f4d7cd5f657"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/mtia_inference_trace/mtia_inference_rank_0.json.gz", "594e90ee2e2aaf3c3634aff5b75fb92ed27490e4", "4c9b678280fe86f2fb326f94ff7ed1c0538fb8be"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/mtia_trace_single_rank/mtia_rank_0.json.gz", "e144b7482e597c1c5be226362e2f46134ca215d6", "3c22b4158dd03da9fd64c5bf63aee232f4836b63"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/nccl_parser_config/nccl_data.json.gz", "3cb077c83144b564244b9fe869d16d92582e27c3", "b4b6dcef87858f3ca2b9ca78646c09d4d4565518"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/negative_queue_length_values_check/rank0.json.gz", "d54e43fdbf03ea5c7569dd6534f4984db3894c53", "d71a78d5110a7da32087ae47ff33eefc9c9a7886"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/ns_resolution_trace/rank-0.Apr_03_18_51_38.1102.pt.trace.json.gz", "c980c48309f7d59edf89271e771db4233dd3ccfa", "e8fe4d1b5b476f171cabf97d933c27ab4aadbbe5"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/rank_unavailable/rank_not_found.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "9246864b696eb763d955192dd0f2ae56a2edf728"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/timeline_analysis/sampled_rank-0.json.gz", "5c7898abbc52a1d4051ef6c93365477feb6c08a8", "c56feed5f481f51e3c81f973bcbb830dfa7ae084"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_compare/base/base.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "3416a6420a0e93b61f6ac9181a369c94b71b6db6"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_compare/test/test.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "596984c10f7c5c26356d08842094e94230d50471"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_diff/control/control.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "b1ceb4c08168dccf9cd6edac595d6764cc347b08"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_diff/test/test.json.gz", "0c2146a8d003629a67f225528969752e1f0656aa", "949c3c47e47ceadc0e18eb90be043d8f512432d8"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_file_list/inference_rank_1.json.gz", "5f883b12d5849d9be5db4c624a19dc9c9af9bb81", "8fb4fb8386bef954ee566dfdd67d76b9ca14018e"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_filter/sampled_rank-1.json.gz", "5c7898abbc52a1d4051ef6c93365477feb6c08a8", "5dbc949e4018dba4343dee56f51d579eb2e70d44"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/triton_example/triton_example.json.gz", "e818c24f2e0e17a3d6a9538c28a65f512cc42f72", "0935c73dc9f18d1e66886f22cf39cfc4a83c487e"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/triton_example/triton_example.json.gz", "4474c7bb0b2b6d3914bdc9a81387e10272b8409d", "36347a15ee2e267c2a951c41cdac38ab1fa18157"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/triton_example/triton_example.json.gz", "895c55002210325ea2878558ee1b293661b7d58a", "c88eab30889289a858e4415ff00e6d1a364b8833"),
    Entry("facebookresearch/HolisticTraceAnalysis", "tests/data/with_gpu_user_annotation/step_based_trace_2543932.json.gz", "9e27c16c78004a40422fab15cb9c1cf9f2cc5c54", "b2a719b973e56b4792e7e1a88cceb169d0bf2a27"),
)

# In the histories, but not in the corpus (see the module docstring): (repo, path, commit, why).
LEFT_OUT = (
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/vision_transformer/rank-{0..7}.json.gz",
     "0c2146a8d003629a67f225528969752e1f0656aa", "each 4 MiB or more: not in the snapshot"),
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/h100/h100_trace.json.gz",
     "3fe0cd2bfe1403077ed69134baca93caee47673e", "4 MiB or more: not in the snapshot"),
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/torchtitan_h100/rank-0.json.gz",
     "0d4ec6340c7be09ac7cf9d7db27a18c9e46b547d", "4 MiB or more: not in the snapshot"),
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/mixed_files/inference_rank_0.json.gz",
     "e1d94757f2b8dfc0a832190b057ac9d515a016de", "4 MiB or more: not in the snapshot"),
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/mixed_files/rank-0.json.gz",
     "e1d94757f2b8dfc0a832190b057ac9d515a016de", "4 MiB or more: not in the snapshot"),
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/trace_file_list/inference_rank_1.json.gz",
     "38c9218d5d6bd5674253a05f8827820212bc554c", "4 MiB or more: not in the snapshot"),
    ("facebookresearch/HolisticTraceAnalysis", "tests/data/execution_trace/benchmark_simple_add_et.json.gz",
     "c24333b7405fbbfd3af598c5bbd11a5d4afa0969", "a PyTorch execution trace, not a Chrome trace"),
    ("pytorch/kineto", "profiler/demo/plugins/profile/GPU-input-bound/localhost.trace.json.gz",
     "ddeab29648c268e20bf264662cebb65fe9517b9c", "4 MiB or more: not in the snapshot"),
)


def cache_dir() -> Path:
    return Path(os.environ.get("CONVDOCTOR_CORPUS", Path.home() / ".cache" / "convdoctor-corpus"))


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cached(entries: tuple[Entry, ...] = CORPUS) -> list[tuple[Entry, Path]]:
    """The entries whose file is in the cache, with its path (build the cache first)."""
    return [(entry, entry.cache_path) for entry in entries if entry.cache_path.is_file()]


def _from_mirror(mirror: str, entry: Entry) -> bytes:
    return subprocess.run(["git", "--git-dir", mirror, "show", f"{entry.commit}:{entry.path}"],
                          capture_output=True, check=True).stdout


def _from_github(entry: Entry) -> bytes:
    url = f"https://raw.githubusercontent.com/{entry.repo}/{entry.commit}/{entry.path}"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (a fixed https host)
        return response.read()


def build(mirrors: dict[str, str], github: bool) -> int:
    missing = 0
    for entry in CORPUS:
        target = entry.cache_path
        if target.is_file() and blob_id(target.read_bytes()) == entry.blob:
            continue
        try:
            if entry.repo in mirrors:
                data = _from_mirror(mirrors[entry.repo], entry)
            elif github:
                data = _from_github(entry)
            else:
                raise OSError(f"no --mirror for {entry.repo} (or pass --github)")
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"not cached: {entry.label}: {exc}", file=sys.stderr)
            missing += 1
            continue
        if blob_id(data) != entry.blob:
            print(f"not cached: {entry.label}: content differs from blob {entry.blob}", file=sys.stderr)
            missing += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print(f"{len(CORPUS) - missing} of {len(CORPUS)} corpus files in {cache_dir()}")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="copy the corpus into the cache")
    b.add_argument("--mirror", action="append", default=[], metavar="OWNER/NAME=GIT_DIR",
                   help="a bare git dir holding that repository's history")
    b.add_argument("--github", action="store_true", help="read the entries without a mirror from GitHub")
    sub.add_parser("list", help="print the cached files")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(dict(m.split("=", 1) for m in args.mirror), args.github)
    for entry, path in cached():
        print(f"{entry.label}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
