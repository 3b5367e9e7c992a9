"""Draws images/hagcn.png, the HAGCN architecture figure of the README: python images/draw_architecture.py"""
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {  # name: (x, y, text, colour)
    "x": (0.2, 2.0, "X\nbatch of frozen\nembeddings (B x d)", "#dddddd"),
    "enc": (3.0, 3.0, "encoder\nZ1 = GELU(X W1)", "#a6cee3"),
    "graph": (3.0, 1.0, "batch k-NN graph (no grad)\nA_hat = D^-1/2 (A+I) D^-1/2\nLap = I - A_hat", "#fdbf6f"),
    "filt": (5.7, 2.0, "spectral filter Z3 = g(Lap) Z1\ngcn | fourier | spline\ncheby | lanczos", "#b2df8a"),
    "dec": (8.4, 2.0, "decoder\nX_hat = W5(GELU(W4 Z3))", "#a6cee3"),
    "head": (5.7, 4.2, "hash head H = X W2 (linear)\nor MLP(Z1) (mlp)", "#cab2d6"),
    "code": (8.4, 4.2, "P = sigmoid(alpha H)\nb = sign(P - tau)", "#fb9a99"),
    "loss": (8.4, 0.4, "loss: MSE(X_hat, X)\n+ lambda mean((Ps Ps^T / L - S)^2)", "#ffffb3"),
}
ARROWS = [("x", "enc"), ("x", "graph"), ("enc", "filt"), ("graph", "filt"), ("filt", "dec"), ("enc", "head"),
          ("head", "code"), ("dec", "loss"), ("code", "loss")]


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 5), dpi=120)
    patches = {}
    for name, (x, y, text, colour) in BOXES.items():
        patches[name] = ax.add_patch(FancyBboxPatch((x - 1.1, y - 0.5), 2.2, 1.0, boxstyle="round,pad=0.05",
                                                    fc=colour, ec="black"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    for a, b in ARROWS:  # arrows are clipped at the edges of the two boxes they join
        bend = "arc3,rad=-0.6" if (a, b) == ("code", "loss") else "arc3"
        ax.add_patch(FancyArrowPatch(BOXES[a][:2], BOXES[b][:2], patchA=patches[a], patchB=patches[b],
                                     arrowstyle="-|>", mutation_scale=14, connectionstyle=bend))
    ax.set_xlim(-1.0, 10.4)
    ax.set_ylim(-0.3, 4.9)
    ax.axis("off")
    ax.set_title("HAGCN: graph-convolutional hashing autoencoder (graph and spectrum rebuilt on every mini-batch)")
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("hagcn.png"))


if __name__ == "__main__":
    main()
