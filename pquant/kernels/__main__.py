"""``python -m pquant.kernels``: build the fused CPU kernels now (retrying a failed build) and
print their status. ``--background`` is the detached builder that runs start."""

import sys

from pquant.kernels import build


def main(argv: list[str]) -> int:
    if argv == ["--background"]:
        return build.background_main()
    if argv:
        print("usage: python -m pquant.kernels", file=sys.stderr)
        return 2
    try:
        module = build.build(retry=True)
    except build.BuildError as exc:
        print(f"fused CPU kernels: unavailable ({exc})")
        return 1
    print(f"fused CPU kernels: on ({module.__name__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
