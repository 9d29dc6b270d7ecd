"""nginx's slab allocator (src/core/ngx_slab.c, 1.22), as a model.

A ``lua_shared_dict`` zone in OpenResty is an nginx slab pool: whether a
store fits ("no memory", forcible eviction), and what ``free_space()``
says, depend on the pool's pages, its size classes and how its free pages
split and merge, not on a byte count.  fcgi-lua keeps the entries in LMDB
(fcgi_lua/shdict.py) and runs this model beside them: every entry is
allocated here with the size nginx would allocate, and freed here when
nginx would free it, so both take the same decisions.

The model is ngx_slab.c line by line, 64-bit (``uintptr_t`` of 8 bytes,
4096-byte pages): page descriptors (slab, next, prev, with the page type in
prev's low bits), the slot lists of partly used pages of each size class
(8 ... 2048 bytes), the in-page bitmaps of the classes below 64 bytes, and
the free-page list with its first-fit allocation and merging.  Pointers are
indices + 1 (0 is NULL): pages 0..n-1, then the 9 slot list heads, then the
free list head.  Addresses handed out are byte offsets from the pool's first
page (page index * 4096 + offset in the page).

It owns the pool's arithmetic only; it must never touch LMDB or know
what an entry is (fcgi_lua/shdict.py decides what to allocate and keeps
the state).

The state is three arrays of 64-bit words (24 bytes a page, as nginx's
page descriptors) and the bitmaps of the pages of small chunks, so that a
zone's pool can be kept in LMDB beside its entries (``dump_chunk``/``load_chunk`` by runs of pages,
``dirty`` says which changed) and shared by every worker.
"""

from __future__ import annotations

from array import array

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
MIN_SHIFT = 3
SLOTS = PAGE_SHIFT - MIN_SHIFT  # 9 size classes: 8 ... 2048
MAX_SIZE = PAGE // 2
EXACT_SHIFT = 6  # 64 = PAGE / (8 * sizeof(uintptr_t))

PAGE_START = 1 << 63
BUSY = (1 << 64) - 1
SHIFT_MASK = 0xF
MAP_SHIFT = 32
MAP_MASK = 0xFFFFFFFF00000000

T_PAGE, T_BIG, T_EXACT, T_SMALL = 0, 1, 2, 3

# sizeof(ngx_slab_pool_t), ngx_slab_page_t and ngx_slab_stat_t on x86_64
# Linux (POSIX semaphores: the pool's ngx_shmtx_t holds a sem_t).
POOL_STRUCT = 200
PAGE_STRUCT = 24
STAT_STRUCT = 32
# A page of chunks under 64 bytes keeps its bitmap in the page: up to 8
# words (512 chunks of 8 bytes).
BITMAP_WORDS = 8
# Pages per stored chunk (dump_chunk / load_chunk).
CHUNK_PAGES = 128


def zone_pages(size: int) -> int:
    """How many pages ngx_slab_init gives a zone of ``size`` bytes (its
    start is page-aligned, as a mmap is)."""
    left = size - POOL_STRUCT - SLOTS * (PAGE_STRUCT + STAT_STRUCT)
    if left <= 0:
        return 0
    pages = left // (PAGE + PAGE_STRUCT)
    descriptors_end = POOL_STRUCT + SLOTS * (PAGE_STRUCT + STAT_STRUCT) + pages * PAGE_STRUCT
    start = -(-descriptors_end // PAGE) * PAGE
    fit = (size - start) // PAGE if size > start else 0
    return min(pages, fit)


class SlabPool:
    """One zone's slab pool.  ``alloc`` returns an address or -1; ``free``
    takes one back.  Every index written is added to ``dirty``."""

    __slots__ = ("bitmaps", "dirty", "free_head", "n", "nxt", "pfree", "prv", "slab")

    def __init__(self, size: int) -> None:
        n = zone_pages(size)
        total = n + SLOTS + 1
        self.n = n
        self.free_head = n + SLOTS
        self.slab = array("Q", bytes(8 * total))
        self.nxt = array("Q", bytes(8 * total))
        self.prv = array("Q", bytes(8 * total))
        # the in-page bitmaps, of the pages of chunks under 64 bytes only
        self.bitmaps: dict[int, array[int]] = {}
        self.dirty: set[int] = set(range(total))
        for slot in range(SLOTS):
            self.nxt[n + slot] = n + slot + 1  # an empty list: itself
        head = self.free_head
        if n:
            self.slab[0] = n
            self.nxt[0] = head + 1
            self.prv[0] = (head + 1) << 2
            self.nxt[head] = 1
        else:
            self.nxt[head] = head + 1
        self.pfree = n

    # -- the page list helpers (pointer = index + 1, prev carries the type) --

    def _unlink(self, page: int) -> None:
        """prev->next = page->next; page->next->prev = page->prev"""
        nxt, prv = self.nxt, self.prv
        prev = (prv[page] >> 2) - 1
        nxt[prev] = nxt[page]
        prv[nxt[page] - 1] = prv[page]
        self.dirty.update((prev, nxt[page] - 1))

    def _relink(self, page: int, slot: int, typ: int) -> None:
        """A full page gets a free chunk: back at the head of its slot list."""
        nxt, prv = self.nxt, self.prv
        head = self.n + slot
        nxt[page] = nxt[head]
        nxt[head] = page + 1
        prv[page] = ((head + 1) << 2) | typ
        prv[nxt[page] - 1] = ((page + 1) << 2) | typ
        self.dirty.update((page, head, nxt[page] - 1))

    # -- ngx_slab_alloc_locked -------------------------------------------------

    def alloc(self, size: int) -> int:
        if size > MAX_SIZE:
            page = self._alloc_pages((size >> PAGE_SHIFT) + (1 if size % PAGE else 0))
            return -1 if page < 0 else page << PAGE_SHIFT
        shift = (size - 1).bit_length() if size > (1 << MIN_SHIFT) else MIN_SHIFT
        slot = shift - MIN_SHIFT
        slab, nxt, prv = self.slab, self.nxt, self.prv
        head = self.n + slot
        page = nxt[head] - 1
        if nxt[page] - 1 != page:
            if shift < EXACT_SHIFT:
                words = (PAGE >> shift) // 64
                bitmap = self.bitmaps[page]
                for w in range(words):
                    word = bitmap[w]
                    if word != BUSY:
                        bit = (~word & (word + 1)).bit_length() - 1  # lowest clear bit
                        word |= 1 << bit
                        bitmap[w] = word
                        self.dirty.add(page)
                        address = (page << PAGE_SHIFT) + ((w * 64 + bit) << shift)
                        if word == BUSY and all(bitmap[r] == BUSY for r in range(w + 1, words)):
                            self._unlink(page)
                            nxt[page] = 0
                            prv[page] = T_SMALL
                        return address
            elif shift == EXACT_SHIFT:
                word = slab[page]
                if word != BUSY:
                    bit = (~word & (word + 1)).bit_length() - 1
                    slab[page] = word | (1 << bit)
                    self.dirty.add(page)
                    if slab[page] == BUSY:
                        self._unlink(page)
                        nxt[page] = 0
                        prv[page] = T_EXACT
                    return (page << PAGE_SHIFT) + (bit << shift)
            else:
                mask = ((1 << (PAGE >> shift)) - 1) << MAP_SHIFT
                for bit in range(PAGE >> shift):
                    m = 1 << (bit + MAP_SHIFT)
                    if slab[page] & m:
                        continue
                    slab[page] |= m
                    self.dirty.add(page)
                    if slab[page] & MAP_MASK == mask:
                        self._unlink(page)
                        nxt[page] = 0
                        prv[page] = T_BIG
                    return (page << PAGE_SHIFT) + (bit << shift)
            # nginx: "ngx_slab_alloc(): page is busy", then a new page
        page = self._alloc_pages(1)
        if page < 0:
            return -1
        self.dirty.update((page, head))
        if shift < EXACT_SHIFT:
            bitmap = self.bitmaps[page] = array("Q", bytes(8 * BITMAP_WORDS))
            n = (PAGE >> shift) // ((1 << shift) * 8) or 1
            i = 0
            while i < (n + 1) // 64:
                bitmap[i] = BUSY
                i += 1
            bitmap[i] = (1 << ((n + 1) % 64)) - 1
            slab[page] = shift
            typ = T_SMALL
            address = (page << PAGE_SHIFT) + (n << shift)
        elif shift == EXACT_SHIFT:
            slab[page] = 1
            typ = T_EXACT
            address = page << PAGE_SHIFT
        else:
            slab[page] = (1 << MAP_SHIFT) | shift
            typ = T_BIG
            address = page << PAGE_SHIFT
        nxt[page] = head + 1
        prv[page] = ((head + 1) << 2) | typ
        nxt[head] = page + 1
        return address

    # -- ngx_slab_free_locked ------------------------------------------------------

    def free(self, address: int) -> None:
        page = address >> PAGE_SHIFT
        if address < 0 or page >= self.n:
            return  # "outside of pool"
        slab, nxt, prv = self.slab, self.nxt, self.prv
        word = slab[page]
        typ = prv[page] & 3
        offset = address & (PAGE - 1)
        if typ == T_SMALL:
            shift = word & SHIFT_MASK
            chunk = offset >> shift
            m = 1 << (chunk % 64)
            w = chunk // 64
            bitmap = self.bitmaps[page]
            if not bitmap[w] & m:
                return  # "chunk is already free"
            if nxt[page] == 0:
                self._relink(page, shift - MIN_SHIFT, T_SMALL)
            bitmap[w] &= ~m
            self.dirty.add(page)
            n = (PAGE >> shift) // ((1 << shift) * 8) or 1
            i = n // 64
            if bitmap[i] & ~((1 << (n % 64)) - 1):
                return
            if any(bitmap[r] for r in range(i + 1, (PAGE >> shift) // 64)):
                return
            del self.bitmaps[page]  # the page's memory, reinitialized at its next use
            self._free_pages(page, 1)
        elif typ == T_EXACT:
            m = 1 << (offset >> EXACT_SHIFT)
            if not word & m:
                return
            if word == BUSY:
                self._relink(page, EXACT_SHIFT - MIN_SHIFT, T_EXACT)
            slab[page] = word & ~m
            self.dirty.add(page)
            if slab[page]:
                return
            self._free_pages(page, 1)
        elif typ == T_BIG:
            shift = word & SHIFT_MASK
            m = 1 << ((offset >> shift) + MAP_SHIFT)
            if not word & m:
                return
            if nxt[page] == 0:
                self._relink(page, shift - MIN_SHIFT, T_BIG)
            slab[page] = slab[page] & ~m
            self.dirty.add(page)
            if slab[page] & MAP_MASK:
                return
            self._free_pages(page, 1)
        else:
            if offset or not word & PAGE_START or word == BUSY:
                return  # "page is already free" / "pointer to wrong page"
            self._free_pages(page, word & ~PAGE_START)

    # -- ngx_slab_alloc_pages / ngx_slab_free_pages ----------------------------------

    def _alloc_pages(self, pages: int) -> int:
        slab, nxt, prv, dirty = self.slab, self.nxt, self.prv, self.dirty
        head = self.free_head
        page = nxt[head] - 1
        while page != head:
            if slab[page] >= pages:
                if slab[page] > pages:
                    rest = page + pages
                    prv[page + slab[page] - 1] = (rest + 1) << 2
                    dirty.add(page + slab[page] - 1)
                    slab[rest] = slab[page] - pages
                    nxt[rest] = nxt[page]
                    prv[rest] = prv[page]
                    before = (prv[page] >> 2) - 1
                    nxt[before] = rest + 1
                    prv[nxt[page] - 1] = (rest + 1) << 2
                    dirty.update((rest, before, nxt[page] - 1))
                else:
                    self._unlink(page)
                slab[page] = pages | PAGE_START
                nxt[page] = 0
                prv[page] = T_PAGE
                dirty.add(page)
                self.pfree -= pages
                for busy in range(page + 1, page + pages):
                    slab[busy] = BUSY
                    nxt[busy] = 0
                    prv[busy] = T_PAGE
                    dirty.add(busy)
                return page
            page = nxt[page] - 1
        return -1

    def _free_pages(self, page: int, pages: int) -> None:
        slab, nxt, prv, dirty = self.slab, self.nxt, self.prv, self.dirty
        self.pfree += pages
        slab[page] = pages
        dirty.add(page)
        pages -= 1
        for zeroed in range(page + 1, page + 1 + pages):
            slab[zeroed] = nxt[zeroed] = prv[zeroed] = 0
            dirty.add(zeroed)
        if nxt[page]:
            self._unlink(page)
        join = page + slab[page]
        if join < self.n and prv[join] & 3 == T_PAGE and nxt[join]:
            pages += slab[join]
            slab[page] += slab[join]
            self._unlink(join)
            slab[join] = nxt[join] = prv[join] = 0
            dirty.add(join)
        if page > 0:
            join = page - 1
            if prv[join] & 3 == T_PAGE:
                if slab[join] == 0:
                    join = (prv[join] >> 2) - 1  # the run's tail points to its head
                if join >= 0 and nxt[join]:
                    pages += slab[join]
                    slab[join] += slab[page]
                    self._unlink(join)
                    slab[page] = nxt[page] = prv[page] = 0
                    dirty.update((page, join))
                    page = join
        if pages:
            prv[page + pages] = (page + 1) << 2
            dirty.add(page + pages)
        head = self.free_head
        prv[page] = (head + 1) << 2
        nxt[page] = nxt[head]
        prv[nxt[page] - 1] = (page + 1) << 2
        nxt[head] = page + 1
        dirty.update((page, head, nxt[page] - 1))

    # -- keeping it in LMDB ------------------------------------------------------

    def chunks(self) -> int:
        return -(-self.n // CHUNK_PAGES)

    def dump_heads(self) -> bytes:
        """pfree and the list heads (slot lists, free list)."""
        first = self.n
        words = array("Q", [self.pfree])
        for table in (self.slab, self.nxt, self.prv):
            words.extend(table[first:])
        return words.tobytes()

    def load_heads(self, raw: bytes) -> None:
        words = array("Q")
        words.frombytes(raw)
        self.pfree = words[0]
        count = SLOTS + 1
        first = self.n
        for k, table in enumerate((self.slab, self.nxt, self.prv)):
            table[first:] = words[1 + k * count : 1 + (k + 1) * count]

    def dump_chunk(self, chunk: int) -> bytes:
        """A run of pages: their descriptors, then (page, 8 words) for each
        bitmap."""
        lo = chunk * CHUNK_PAGES
        hi = min(self.n, lo + CHUNK_PAGES)
        words = array("Q")
        for table in (self.slab, self.nxt, self.prv):
            words.extend(table[lo:hi])
        for page in range(lo, hi):
            bitmap = self.bitmaps.get(page)
            if bitmap is not None:
                words.append(page)
                words.extend(bitmap)
        return words.tobytes()

    def load_chunk(self, chunk: int, raw: bytes) -> None:
        lo = chunk * CHUNK_PAGES
        hi = min(self.n, lo + CHUNK_PAGES)
        count = hi - lo
        words = array("Q")
        words.frombytes(raw)
        for k, table in enumerate((self.slab, self.nxt, self.prv)):
            table[lo:hi] = words[k * count : (k + 1) * count]
        for page in range(lo, hi):
            self.bitmaps.pop(page, None)
        for at in range(3 * count, len(words), 1 + BITMAP_WORDS):
            self.bitmaps[words[at]] = words[at + 1 : at + 1 + BITMAP_WORDS]
