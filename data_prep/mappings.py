"""Label mappings of the reference's data sets (SPEC.md section 1)."""

from __future__ import annotations

# The 20 metal classes, index order (alphabetical), as configs/metal.py.
METAL_CLASSES = (
    'black metal', 'death metal', 'deathcore', 'doom metal', 'folk metal', 'glam metal',
    'grindcore', 'hard rock', 'hardcore', 'industrial metal', 'melodic death metal',
    'metalcore', 'nu metal', 'power metal', 'progressive metal', 'punk', 'screamo',
    'stoner rock', 'symphonic metal', 'thrash metal')

# The 32 query tags -> 20 classes: 7 merged, 5 dropped (None), the rest as is.
METAL_LABEL_MAP: dict[str, str | None] = {
    **{c: c for c in METAL_CLASSES},
    'depressive black metal': 'black metal',
    'blackgaze': 'black metal',
    'slam death metal': 'death metal',
    'technical death metal': 'death metal',
    'sludge metal': 'doom metal',
    'funeral doom': 'doom metal',
    'goregrind': 'grindcore',
    'nwobhm': None,
    'crust punk': None,
    'mathcore': None,
    'drone metal': None,
    'djent': None,
}
METAL_QUERY_GENRES = tuple(METAL_LABEL_MAP)

# The genres data set: 10 playlist-search words; classes sorted alphabetically.
GENRE_QUERIES = ('pop', 'rock', 'rap', 'metal', 'house', 'r&b', 'classical', 'techno', 'jazz',
                 'folk')
GENRE_CLASSES = tuple(sorted(GENRE_QUERIES))
