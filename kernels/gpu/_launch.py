"""Launch-configuration helpers shared by the GPU kernel modules (no numba compilation here)."""

MAX_THREADS = 256       # threads per block for 1-D launches (power of two; reduction kernels rely on it)
MAX_BLOCKS = 1024       # cap on blocks for elementwise grid-stride kernels
REDUCE_BLOCKS = 128     # cap on blocks for reductions (partials are copied back to the host)
TILE = 16               # tile edge of the 2-D (GEMM) launches


def threads_for(n):
    """Threads per block: smallest power of two >= n, clamped to [32, MAX_THREADS]."""
    t = 32
    while t < n and t < MAX_THREADS:
        t *= 2
    return t


def grid_1d(n, max_blocks=MAX_BLOCKS):
    """(blocks, threads) for n work items: blocks = ceil(n / threads) clamped to [1, max_blocks]."""
    threads = threads_for(n)
    blocks = (max(int(n), 1) + threads - 1) // threads
    return max(1, min(blocks, max_blocks)), threads


def launch_1d(kernel, n, max_blocks=MAX_BLOCKS):
    """kernel[blocks, threads] configured for a grid-stride loop over n items."""
    blocks, threads = grid_1d(n, max_blocks)
    return kernel[blocks, threads]


def grid_tiles(rows, cols, tile=TILE, max_blocks=MAX_BLOCKS):
    """((bx, by), (tile, tile)) covering a rows x cols matrix with tile x tile blocks (x = columns)."""
    bx = max(1, min((int(cols) + tile - 1) // tile, max_blocks))
    by = max(1, min((int(rows) + tile - 1) // tile, max_blocks))
    return (bx, by), (tile, tile)


def launch_tiles(kernel, rows, cols, tile=TILE, max_blocks=MAX_BLOCKS):
    """kernel[(bx, by), (tile, tile)] for a tile-stride loop over a rows x cols output."""
    blocks, threads = grid_tiles(rows, cols, tile, max_blocks)
    return kernel[blocks, threads]


def launch_blocks(kernel, groups, items_per_group, max_blocks=MAX_BLOCKS):
    """kernel[blocks, threads] with one block per group (block-stride over groups) and
    threads_for(items_per_group) threads cooperating inside each group."""
    blocks = max(1, min(int(groups), max_blocks))
    return kernel[blocks, threads_for(items_per_group)]
