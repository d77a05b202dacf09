"""``python -m pquant.kernels``: build the fused CPU kernels now and print their status."""

from pquant.kernels import status

if __name__ == "__main__":
    print(status())
