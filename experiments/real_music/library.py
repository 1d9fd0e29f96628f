"""The study's labelled library: whole tracks with a clear style from Debian's
game-soundtrack packages, and renderings of mma's grooves for the styles the
packages hold too few recordings of; one manifest CSV (path, label, artist =
the split's group: package, album or groove family, track_id).

``apt-get download`` fetches the packages (no install) and ``dpkg-deb -x``
unpacks them; the packages reserved for an independent evaluation (RESERVED)
are refused by name. The rendered styles need Debian's mma, fluidsynth and GM
soundfonts (installed on first use).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import glob
import os
import random
import shutil
import subprocess
from collections.abc import Sequence

import soundfile as sf

RESERVED = frozenset({
    'wesnoth-1.16-music', 'fretsonfire-songs-muldjord', 'fretsonfire-songs-sectoid',
    'marsshooter-data', 'nexuiz-music', 'singularity-music', 'pingus-data',
    'heroes-sound-tracks', 'ironseed-data', 'fb-music-high', 'openttd-openmsx',
    'wesnoth-music', 'nexuiz-data',  # depend on / belong to reserved ones
})
MIN_TRACK_SECONDS = 60.0
DEFAULT_STYLES = 'orchestral,electronic,jazz,rock,latin'
MIDI_PACKAGES = ('mma', 'fluidsynth', 'fluid-soundfont-gm', 'timgm6mb-soundfont')
SOUNDFONTS = ('/usr/share/sounds/sf2/FluidR3_GM.sf2', '/usr/share/sounds/sf2/TimGM6mb.sf2')
RENDER_SECONDS = 95  # three 30-s windows spread over each rendering


@dataclasses.dataclass(frozen=True)
class Pick:
  """Tracks of one package that share a style; ``group`` keeps an album or
  composer of a package apart from its others (default: the package)."""
  label: str
  package: str
  globs: tuple[str, ...]
  group: str = ''
  exclude: tuple[str, ...] = ()
  confidence: str = 'medium'


_W = 'usr/share/games/widelands/data/music/'
_NAEV = 'usr/share/naev/dat/snd/music/'
_CLONK = 'usr/share/games/openclonk/Music.ocg/'
_WZ = 'usr/share/games/warzone2100/music/albums/'
# Styles from credits, composers' own tags and game conventions
# (/work/notes/real_music.md has the survey); the confidence says how sure.
PICKS = (
    Pick('orchestral', 'flare-game', ('usr/share/games/flare/mods/fantasycore/music/*.ogg',),
         exclude=('wind_ambient.ogg',), confidence='medium-high'),
    Pick('orchestral', 'widelands-data', (_W + 'ingame_*.ogg',),
         exclude=tuple(f'ingame_{i}.ogg' for i in ('00', 15, 16, 17, 23, 28))),
    Pick('orchestral', 'freecol', ('usr/share/games/freecol/default/resources/music/default/*.ogg',),
         exclude=('musicbox.ogg',), confidence='medium-high'),
    Pick('orchestral', 'unknown-horizons', ('usr/share/unknown-horizons/content/audio/music/*.ogg',),
         exclude=('irelands_coast.ogg',), confidence='medium-high'),
    Pick('electronic', 'warzone2100-music', (_WZ + 'original_soundtrack/*.opus',),
         group='warzone2100-music:severn'),
    Pick('electronic', 'warzone2100-music', (_WZ + 'legacy_soundtrack/*.opus',
                                             _WZ + 'aftermath_soundtrack/*.opus'),
         group='warzone2100-music:lupusmechanicus', exclude=('*_enhanced.opus',)),
    Pick('electronic', 'blobwars-data', ('usr/share/games/blobwars/music/*',), exclude=('*.tags',)),
    Pick('electronic', 'starfighter-data', tuple(
        'usr/share/starfighter/music/' + f for f in (
            'through_space.ogg', 'sound_and_silence.ogg', 'last_cyber_dance.ogg',
            'walking_among_androids.ogg', 'railjet_short.ogg', 'space_dimensions.ogg', 'RE.ogg'))),
    Pick('electronic', 'naev-data', tuple(_NAEV + f for f in (
        'terminal.ogg', 'eureka.ogg', 'combat1.ogg', 'combat3.ogg', 'sirius2.ogg', 'dvaered1.ogg',
        'dvaered2.ogg')), group='naev-data:askyel'),
    Pick('rock_metal', 'widelands-data', tuple(_W + f'ingame_{i}.ogg' for i in (15, 16, 17)),
         group='widelands-data:middlefinger', confidence='high (tagged thrash metal)'),
    Pick('rock_metal', 'openclonk-data', (_CLONK + 'Motorway.ogg', _CLONK + 'TheSkylands.ogg'),
         confidence='high (tagged rock)'),
    Pick('rock_metal', 'redeclipse-data', ('usr/share/games/redeclipse/data/sounds/music/track_*.ogg',),
         confidence='low (style not stated; loud, dense guitars)'),
    Pick('ambient', 'naev-data', (_NAEV + 'ambiphonic.ogg', _NAEV + 'void_sensor.ogg'),
         group='naev-data:zeropage', confidence='medium-high'),
    Pick('ambient', 'naev-data', tuple(_NAEV + f'ambient{k}.ogg' for k in ('1', '2', '2_5', '3')),
         group='naev-data:whallon'),
    Pick('ambient', 'openclonk-data', (_CLONK + 'LucidDream.ogg',), confidence='high (tagged)'),
    Pick('ambient', 'freeorion-data',
         ('usr/share/games/freeorion/default/data/sound/artificial_intelligence_v3.ogg',),
         confidence='medium-low'),
)


@dataclasses.dataclass(frozen=True)
class MidiStyle:
  """Grooves of mma's library by family (the split's groups), chord
  progressions and a tempo range."""
  families: dict[str, tuple[str, ...]]
  progressions: tuple[tuple[str, ...], ...]
  tempo: tuple[int, int]


MIDI_STYLES = {
    'jazz': MidiStyle(
        {'swing': ('Swing', 'SwingWalk'), 'bigband': ('BigBand', 'BigBand1'),
         'jazzcombo': ('JazzCombo', 'JazzCombo1'), 'fastswing': ('FastSwing', 'FastSwingWalk'),
         'slowjazz': ('SlowJazz', 'SlowJazz1')},
        (('Dm7', 'G7', 'Cmaj7', 'A7'), ('Cmaj7', 'A7', 'Dm7', 'G7'),
         ('Fmaj7', 'Bb7', 'Em7', 'A7', 'Dm7', 'G7', 'Cmaj7', 'Cmaj7')), (100, 190)),
    'rock': MidiStyle(
        {'50srock': ('50sRock', '50sRock1'), '60srock': ('60sRock', '60sRock1'),
         'rock-128': ('Rock128', 'Rock128Plain'), 'softrock': ('SoftRock', 'SoftRock1'),
         '8beat': ('8Beat', '8Beat1')},
        (('C', 'C', 'F', 'F', 'C', 'C', 'G', 'F'), ('Am', 'F', 'C', 'G'), ('E', 'A', 'B', 'A'),
         ('C', 'Bb', 'F', 'C')), (100, 160)),
    'latin': MidiStyle(
        {'bossanova': ('BossaNova',), 'samba': ('Samba',), 'salsa': ('Salsa',),
         'mambo': ('Mambo', 'Mambo1'), 'chacha': ('ChaCha', 'ChaCha1'), 'rhumba': ('Rhumba',),
         'beguine': ('Beguine', 'Beguine1'), 'merengue': ('Merengue', 'Merengue1')},
        (('Dm7', 'G7', 'Cmaj7', 'Cmaj7'), ('Am7', 'D7', 'Gmaj7', 'Cmaj7'),
         ('Cm7', 'F7', 'Bbmaj7', 'Ebmaj7')), (96, 150)),
}


def package_root(package: str, debs_dir: str, extract_dir: str) -> str:
  """The unpacked package, downloaded (apt-get download) and unpacked once."""
  if package in RESERVED:
    raise SystemExit(f'{package} is reserved for an independent evaluation: not used')
  root = os.path.join(extract_dir, package)
  if os.path.isdir(os.path.join(root, 'usr')):
    return root
  os.makedirs(debs_dir, exist_ok=True)
  debs = sorted(glob.glob(os.path.join(debs_dir, f'{package}_*.deb')))
  if not debs:
    subprocess.run(['apt-get', 'download', package], cwd=debs_dir, check=True,
                   capture_output=True)
    debs = sorted(glob.glob(os.path.join(debs_dir, f'{package}_*.deb')))
  os.makedirs(root, exist_ok=True)
  subprocess.run(['dpkg-deb', '-x', debs[-1], root], check=True)
  return root


def pick_files(pick: Pick, root: str) -> list[str]:
  found = sorted({p for g in pick.globs for p in glob.glob(os.path.join(root, g))
                  if os.path.isfile(p)})
  found = [p for p in found if not any(fnmatch.fnmatch(os.path.basename(p), e)
                                       for e in pick.exclude)]
  return [p for p in found if sf.info(p).duration >= MIN_TRACK_SECONDS]


def choose_tracks(candidates: dict[str, dict[str, list[str]]], per_style: int, seed: int
                  ) -> list[tuple[str, str, str]]:
  """(path, style, group): at most ``per_style`` tracks per style, taken in
  turn from its groups (seeded order), so no single album dominates."""
  rng = random.Random(seed)
  chosen = []
  for style in sorted(candidates):
    groups = {g: sorted(paths) for g, paths in sorted(candidates[style].items())}
    for paths in groups.values():
      rng.shuffle(paths)
    taken = 0
    while taken < per_style and any(groups.values()):
      for group, paths in groups.items():
        if paths and taken < per_style:
          chosen.append((paths.pop(), style, group))
          taken += 1
  return chosen


def recorded_candidates(styles: Sequence[str], args: argparse.Namespace
                        ) -> dict[str, dict[str, list[str]]]:
  """style -> group -> track paths, from the packages' picks."""
  debs_dir = args.debs_dir or os.path.join(args.work, 'debs')
  extract_dir = os.path.join(args.work, 'packages')
  candidates: dict[str, dict[str, list[str]]] = {s: {} for s in styles if s not in MIDI_STYLES}
  picks = [p for p in PICKS if p.label in candidates]
  if picks:
    subprocess.run(['apt-get', 'update', '-qq'], check=False, capture_output=True)
  for pick in picks:
    root = package_root(pick.package, debs_dir, extract_dir)
    candidates[pick.label].setdefault(pick.group or pick.package, []).extend(
        pick_files(pick, root))
  return candidates


def render_midi_styles(styles: Sequence[str], args: argparse.Namespace
                       ) -> list[tuple[str, str, str]]:
  """(path, style, group) of ``tracks_per_style`` renderings per mma style:
  grooves of each family in turn, seeded tempo, key, chords and soundfont."""
  wanted = [s for s in styles if s in MIDI_STYLES]
  if not wanted:
    return []
  if not (shutil.which('mma') and shutil.which('fluidsynth') and os.path.exists(SOUNDFONTS[0])):
    subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *MIDI_PACKAGES],
                   check=True, capture_output=True)
  fonts = [f for f in SOUNDFONTS if os.path.exists(f)]
  rng = random.Random(args.seed)
  out = []
  for style in wanted:
    spec = MIDI_STYLES[style]
    rounds = -(-args.tracks_per_style // len(spec.families))
    grooves = [(family, gs[k % len(gs)]) for k in range(rounds)
               for family, gs in spec.families.items()][:args.tracks_per_style]
    for i, (family, groove) in enumerate(grooves):
      settings = (rng.randint(*spec.tempo), rng.randint(-5, 6), rng.choice(spec.progressions),
                  fonts[i % len(fonts)])
      path = os.path.join(args.work, 'midi', style, f'{groove}_{i:02d}.wav')
      if not os.path.exists(path):  # rendered once; the settings are drawn either way
        render(groove, *settings, path)
      out.append((path, style, f'mma:{family}'))
  return out


def render(groove: str, tempo: int, transpose: int, chords: Sequence[str], font: str,
           path: str) -> None:
  """One mma groove -> MIDI -> a 22,050 Hz WAV of about RENDER_SECONDS."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  stem = os.path.splitext(path)[0]
  bars = int(RENDER_SECONDS * tempo / 60 / 4) + 1
  lines = [f'Tempo {tempo}', f'Transpose {transpose}', f'Groove {groove}']
  lines += [f'{b + 1} {chords[b % len(chords)]}' for b in range(bars)]
  with open(stem + '.mma', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  subprocess.run(['mma', '-f', stem + '.mid', stem + '.mma'], check=True, capture_output=True)
  subprocess.run(['fluidsynth', '-ni', '-q', '-F', path + '.tmp.wav', '-r', '22050', '-g', '0.6',
                  font, stem + '.mid'], check=True, capture_output=True)
  os.replace(path + '.tmp.wav', path)


def assemble(args: argparse.Namespace) -> str:
  """Writes ``work/library/manifest.csv`` (and links named with an audio
  extension); returns the manifest's path."""
  library = os.path.join(args.work, 'library')
  shutil.rmtree(library, ignore_errors=True)
  styles = styles_of(args)
  chosen = choose_tracks(recorded_candidates(styles, args), args.tracks_per_style, args.seed)
  chosen += render_midi_styles(styles, args)
  manifest = os.path.join(library, 'manifest.csv')
  os.makedirs(library)
  with open(manifest, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['path', 'label', 'artist', 'track_id'])
    for path, style, group in chosen:
      name = os.path.basename(path)
      if not os.path.splitext(name)[1]:  # blobwars' Ogg files have no extension
        name += '.ogg'
      link = os.path.join(library, style, f'{group.replace(":", "_")}__{name}')
      os.makedirs(os.path.dirname(link), exist_ok=True)
      os.symlink(os.path.abspath(path), link)
      w.writerow([os.path.relpath(link, library), style, group,
                  f'{group}/{os.path.splitext(name)[0]}'])
  return manifest


def styles_of(args: argparse.Namespace) -> list[str]:
  styles = sorted({s.strip() for s in args.styles.split(',') if s.strip()})
  known = {p.label for p in PICKS} | set(MIDI_STYLES)
  unknown = [s for s in styles if s not in known]
  if unknown or len(styles) < 2:
    raise SystemExit(f'--styles {args.styles!r}: choose two or more of {sorted(known)}')
  return styles
