"""festival (Debian) voices as a training-audio source, with segment times from festival itself.

Why festival: its diphone, cluster-unit and HTS voices have spectra unlike espeak-ng's formant
synthesis, so a generator trained on both learns speech rather than one synthesiser. Why the
times come from festival: every voice builds its waveform from the ``Segment`` relation (diphone
joins sit on segment boundaries, HTS writes its generated state durations back into it, the
cluster-unit voice concatenates recorded units whose lengths are the segments'), so the
``end`` feature of each segment is where the audio event is; nothing is estimated afterwards.
Checked by eye on every voice (waveform + spectrogram with the boundaries): diphone and HTS
boundaries sit on closures, bursts and voicing onsets; the Russian cluster-unit voice's are
within ~30 ms.

One ``festival --pipe`` process synthesises a whole batch of utterances of one voice (start-up
and voice loading are most of the cost of a single short sentence): a Scheme script says each
text, saves its wave into a temporary folder and prints the segments with their end times.

Held-out voices (flite, festival's CMU-ARCTIC-speaker voices ``kal_diphone`` and
``cmu_us_slt_arctic_hts``, any ``*arctic*``/``*cmu*`` voice) are refused by name, whether or not
they are installed, so an outside check on them stays meaningful.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from vivify.export.data import text as text_mod
from vivify.export.data.augment import resample
from vivify.export.data.labels import VISEMES

LOG = logging.getLogger(__name__)
RATE = 16_000
FESTIVAL = "festival"
TIMEOUT_S_PER_UTTERANCE = 10.0

# Never used for training or tuning (deliverable 1 of issue 13): the outside check speaks with
# these. Matched as substrings of the voice (or package) name, case-insensitive.
HELD_OUT = ("flite", "kal_diphone", "kallpc", "cmu_us_slt_arctic_hts", "us-slt", "slt_",
            "arctic", "cmu")


class HeldOutVoiceError(ValueError):
    """A held-out voice was asked for: it must stay out of training and tuning."""


class FestivalError(RuntimeError):
    """festival could not synthesise an utterance (missing, crashed, or produced nothing)."""


@dataclass(frozen=True)
class LabelledClip:
    """One utterance from any labelled source (festival here; klettres imports it too)."""

    audio: np.ndarray  # float32 mono 16 kHz
    segments: list[tuple[float, float, str]]  # (start_s, end_s, viseme), contiguous from 0
    source: str  # "festival:<voice>"
    speaker: str  # the voice name
    text: str


def is_held_out(name: str) -> bool:
    """True for every voice or package name that must never reach training or tuning."""
    low = name.lower()
    return any(h in low for h in HELD_OUT)


def _check_allowed(voice: str) -> None:
    if is_held_out(voice):
        raise HeldOutVoiceError(f"festival voice {voice!r} is held out (issue 13): never used "
                                "for training or tuning")


# --- phone sets → visemes ------------------------------------------------------------------
# Each festival phone set's names mapped by their phonetic meaning (the phone sets' own
# features were printed from the voices: vowel height/front/round, consonant type/place).
# Diphthongs give two visemes; the segment is split in halves as labels.segments does.

def _table(spec: str) -> dict[str, tuple[str, ...]]:
    """'VIS: ph ph ph; VIS+VIS: ph' → {ph: (VIS, ...)}: compact, reviewable tables."""
    out: dict[str, tuple[str, ...]] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        vis, phones = part.split(":", 1)
        visemes = tuple(vis.strip().split("+"))
        assert all(v in VISEMES for v in visemes), visemes
        for ph in phones.split():
            out[ph] = visemes
    return out


# English "radio" phone set (mrpa-like names, used by ked_diphone).
RADIO = _table("""
    SIL: pau h# brth; BMP: p b m em; FV: f v; TH: th dh; TDN: t d n l dx nx el en;
    SZ: s z; SH: sh zh ch jh; KGH: k g ng hh hv; R: r; W: w; J: y;
    AA: aa ae; AH: ah ax; OH: ao; EH: eh; IY: ih iy; UW: uh uw; ER: er axr;
    AA+UW: aw; AA+IY: ay; EH+IY: ey; OH+UW: ow; OH+IY: oy
""")

# Italian (pc_diphone, lp_diphone): 1 marks stress; nf is the labiodental nasal of "anfora".
ITALIAN = _table("""
    SIL: #; BMP: p b m; FV: f v nf; TDN: t d n l L; SZ: s z ts dz; SH: S Z tS dZ;
    KGH: k g ng; R: r; W: w; J: j J;
    IY: i i1; EH: e e1 E E1; AA: a a1; OH: o o1 O O1; UW: u u1
""")

# Czech (czech_ph): ~ marks palatal/postalveolar, ':' length; '_' is the glottal stop the voice
# puts before vowel-initial words; n* is the velar nasal before k/g.
CZECH = _table("""
    SIL: #; KGH: _ ch g k h n*; BMP: p b m; FV: f v; TDN: t d n l t~ d~; J: j n~;
    SZ: s z c dz; SH: s~ z~ c~ dz~; R: r r~ r~*;
    AA: a a:; EH: e e:; IY: i i:; OH: o o:; UW: u u:
""")

# Russian (msu_ru_nsh_clunits): doubled letters are the palatalised ("soft") consonants; long
# names are stressed vowels; y/yy is ы (unrounded, spread: IY), ae/ay the reduced vowels.
RUSSIAN = _table("""
    SIL: pau; BMP: p pp b bb m mm; FV: f ff v vv; TDN: t tt d dd n nn l ll;
    SZ: s ss z zz c; SH: sh sch zh ch; KGH: k kk g gg h hh; R: r rr; J: j;
    AA: aa; AH: a ae ay; EH: ee e; IY: ii i yy y; OH: oo; UW: uu u ur
""")

# Finnish (suo_fi_lj_diphone, hy_fi_mv_diphone): ':' length, @ = ä (open front), 7 = ö,
# y = y (rounded front), & its marginal variant.
_FI_BASE = """
    SIL: # ##; BMP: p b m; FV: f v; TH: T D; TDN: t d n l L; SZ: s z; SH: S Z;
    KGH: k g h N; R: r; W: w; J: j;
    AA: a @ &; EH: e; IY: i; OH: o; UW: u; YY: y 7
"""
FINNISH = _table(_FI_BASE)
FINNISH.update({ph + ":": vis for ph, vis in list(FINNISH.items()) if ph not in ("#", "##")})

# Catalan central (upc_ca_ona_hts): ax = schwa, J = ɲ, L = ʎ, j/w the glides.
CATALAN = _table("""
    SIL: pau _ #; BMP: p b m; FV: f; TDN: t d n l L; SZ: s z; SH: S Z; KGH: k g;
    R: r rr; W: w; J: j J;
    AH: ax; AA: a a1; EH: e e1 E E1; IY: i i1; OH: o o1 O O1; UW: u u1
""")

# Hindi, Marathi, Telugu (the NSK diphone voices share one phone set): T D N are retroflex,
# th dh tth ddh td the dental stops, a the short (schwa-like) vowel, ay = ɛː, aw = ɔː.
NSK = _table("""
    SIL: pau; BMP: p b m bh; FV: f v; TDN: T D N th dh tth ddh td n l L;
    SZ: s; SH: sh ch j zh; KGH: k g kh gh h x; R: r R; J: y; W: w;
    KGH+SH: ksh; SZ+R+IY: sri;
    AH: a @; AA: aa; IY: ih iy; UW: uh uw; EH: eh ee ay; OH: oh oo aw
""")


@dataclass(frozen=True)
class Voice:
    """What the module knows about one allowed festival voice."""

    name: str  # festival's voice name (``voice_<name>`` selects it)
    language: str  # key of SENTENCE_WORDS, or "en"
    encoding: str  # the byte encoding its text front end expects
    phones: dict[str, tuple[str, ...]]
    package: str  # the Debian package that installs it
    synthesis: str = "diphone"  # "diphone", "clunits" or "hts": how stretch is applied


VOICES: dict[str, Voice] = {v.name: v for v in (
    Voice("ked_diphone", "en", "ascii", RADIO, "festvox-kdlpc16k"),
    Voice("pc_diphone", "it", "latin-1", ITALIAN, "festvox-itapc16k"),
    Voice("lp_diphone", "it", "latin-1", ITALIAN, "festvox-italp16k"),
    Voice("czech_ph", "cs", "iso8859-2", CZECH, "festvox-czech-ph"),
    Voice("czech_dita", "cs", "iso8859-2", CZECH, "festvox-czech-dita"),  # adult female
    Voice("czech_krb", "cs", "iso8859-2", CZECH, "festvox-czech-krb"),  # child
    Voice("czech_machac", "cs", "iso8859-2", CZECH, "festvox-czech-machac"),
    Voice("msu_ru_nsh_clunits", "ru", "utf-8", RUSSIAN, "festvox-ru", "clunits"),
    Voice("suo_fi_lj_diphone", "fi", "latin-1", FINNISH, "festvox-suopuhe-lj"),
    Voice("hy_fi_mv_diphone", "fi", "latin-1", FINNISH, "festvox-suopuhe-mv"),
    Voice("upc_ca_ona_hts", "ca", "latin-1", CATALAN, "festvox-ca-ona-hts", "hts"),
    Voice("hindi_NSK_diphone", "hi", "utf-8", NSK, "festvox-hi-nsk"),
    Voice("marathi_NSK_diphone", "mr", "utf-8", NSK, "festvox-mr-nsk"),
    Voice("telugu_NSK_diphone", "te", "utf-8", NSK, "festvox-te-nsk"),
)}
assert not any(is_held_out(v.name) or is_held_out(v.package) for v in VOICES.values())

# Debian packages this source needs (installed with --no-install-recommends: festival
# recommends festvox-kallpc16k, a held-out voice).
PACKAGES = ("festival", *sorted({v.package for v in VOICES.values()}),
            "festival-hi", "festival-mr", "festival-te")

# --- text ------------------------------------------------------------------------------------
# Short everyday words per language, in the native orthography (each voice's front end reads
# it in its own encoding, see Voice.encoding); chosen for bilabials, open vowels and variety.
SENTENCE_WORDS: dict[str, str] = {
    "it": "mamma papà pane bambino bello mondo piove mattina pomodoro musica finestra "
          "bicicletta parlare sempre mare amico buono perché città porta cavallo luna fiore "
          "acqua giorno bambola tempo",
    "cs": "máma táta pivo voda kniha dobrý den město ryba mléko hrad pes babička most zima "
          "jablko modrý malý řeka žába chleba polévka pomalu hezky",
    "ru": "мама папа молоко рыба дом вода хорошо спасибо большой маленький мир музыка "
          "бабушка птица город яблоко парк окно книга собака море",
    "fi": "äiti isä talo kissa koira maito vesi hyvä päivä kiitos pieni suuri meri puu kuu "
          "marja omena kirja ystävä musiikki poika tyttö lumi",
    "ca": "mare pare casa gat gos pa aigua bon dia moltes gràcies poble mar platja llibre "
          "música finestra amic temps bé blau poma formatge",
    "hi": "माँ पिता पानी बच्चा घर किताब मेरा नाम आम बहुत अच्छा बाजार समय दोस्त फूल मोर "
          "बादल रोटी दूध भाई बहन",
    "mr": "आई बाबा पाणी घर पुस्तक माझे नाव आंबा खूप छान बाजार वेळ मित्र फूल मोर झाड भाकरी "
          "दूध भाऊ बहीण",
    "te": "అమ్మ నాన్న నీళ్ళు ఇల్లు పుస్తకం నా పేరు మామిడి చాలా బాగుంది బజారు సమయం "
          "స్నేహితుడు పువ్వు నెమలి చెట్టు పాలు అన్న అక్క",
}


def sentence(language: str, sentence_id: int) -> str:
    """The sentence with this id: English from vivify.export.data.text, others from word lists.

    A pure function of (language, id), with text.py's disjoint training/evaluation id ranges.
    """
    if language.startswith("en"):
        return text_mod.sentence("en", sentence_id)
    rng = np.random.default_rng([sentence_id, len(language), ord(language[0]), 7])
    return text_mod.word_sentence(SENTENCE_WORDS[language].split(), rng, lengths=(3, 9))


# --- festival --------------------------------------------------------------------------------

def installed() -> bool:
    """Whether the festival binary is on PATH."""
    return shutil.which(FESTIVAL) is not None


@functools.lru_cache(maxsize=1)
def _installed_voice_names() -> tuple[str, ...]:
    out = subprocess.run([FESTIVAL, "--pipe"], input=b"(print (voice.list))\n",
                         capture_output=True, timeout=60, check=False).stdout.decode("ascii",
                                                                                      "replace")
    return tuple(out.replace("(", " ").replace(")", " ").split())


def available_voices() -> list[str]:
    """Allowed voices that are installed (empty without festival); held-out ones never."""
    if not installed():
        return []
    names = set(_installed_voice_names())
    return [v for v in VOICES if v in names and not is_held_out(v)]


def _front_end_text(text: str, spec: Voice) -> bytes:
    """``text`` as the voice's front end wants it.

    The NSK (Hindi/Marathi/Telugu) voices crash (segfault) on the Devanagari nukta (ज़, ड़)
    and on text with no letter of their script, so the nukta is dropped (the base consonant
    is what they can say), so is anything but their script, spaces and , . ? !, and text
    left without a letter is refused.
    """
    if spec.phones is NSK:
        text = unicodedata.normalize("NFD", text).replace("\u093c", "")
        text = "".join(c for c in unicodedata.normalize("NFC", text)
                       if _in_nsk_script(c) or c in " ,.?!")
        if not any(_in_nsk_script(c) for c in text):
            raise ValueError(f"{spec.name} needs text in its own script")
    return b"".join(_encode_char(c, spec.encoding) for c in text)


def _encode_char(c: str, encoding: str) -> bytes:
    """One character in ``encoding``, else its unaccented base (é → e), else a space.

    Why not "replace": the front ends spell a "?" out ("question mark") or say nonsense.
    """
    for form in (c, unicodedata.normalize("NFKD", c)):
        base = "".join(x for x in form if not unicodedata.combining(x))
        try:
            return base.encode(encoding)
        except UnicodeEncodeError:
            continue
    return b" "


def _in_nsk_script(c: str) -> bool:
    """Devanagari (Hindi, Marathi) or Telugu, without the danda (the voices' "।" is ".")."""
    return "\u0900" <= c <= "\u0963" or "\u0966" <= c <= "\u097f" or "\u0c00" <= c <= "\u0c7f"


def _scheme_string(data: bytes) -> bytes:
    """A Scheme string literal of raw bytes (festival passes them to the voice's front end)."""
    data = bytes(b if b >= 32 else 32 for b in data)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


_UTT = """(set! utt nil)
{stretch}
(set! utt (utt.synth (eval (list 'Utterance 'Text {{text}}))))
(utt.save.wave utt "{wav}" 'riff)
(mapcar (lambda (s) (format t "@@S {i} %s %s %s\\n" (item.name s) (item.feat s "end")
                            (item.feat s "ph_vc")))
        (utt.relation.items utt 'Segment))
(format t "@@E {i}\\n")
"""


def _stretch_scheme(spec: Voice, stretch: float) -> str:
    """Scheme that makes the next utterance ``stretch`` times slower (1 = the voice's own rate).

    Diphone voices scale their duration model (``Duration_Stretch``); the HTS voice takes
    hts_engine's speed ``-r`` (its segment times are the generated state durations, so they
    follow); the cluster-unit (Russian) voice plays recorded units at their own length and
    ignores it: vary its speed by resampling audio and times together, as build.py does.
    """
    if spec.synthesis == "hts":
        return (f"(set! hts_engine_params (append {spec.name}::hts_engine_params "
                f"(list (list \"-r\" {1.0 / stretch:.4f}))))")
    return f"(Parameter.set 'Duration_Stretch (* vivify_base_stretch {stretch:.4f}))"


class Festival:
    """Synthesises labelled clips with festival's allowed voices.

    ``say`` is one utterance; ``say_many`` one festival process for a batch of one voice,
    which is what a corpus builder should call (start-up costs ~0.2 s per process).
    """

    def __init__(self) -> None:
        if not installed():
            raise FestivalError("festival is not installed (apt-get install festival ...)")
        self._unknown_logged: set[tuple[str, str]] = set()

    def say(self, text: str, voice: str, stretch: float = 1.0) -> LabelledClip:
        """One utterance of ``text`` by ``voice`` (a festival voice name, see VOICES)."""
        return self.say_many([text], voice, [stretch])[0]

    def say_many(self, texts: Sequence[str], voice: str,
                 stretches: Sequence[float] | None = None) -> list[LabelledClip]:
        """All ``texts`` by ``voice``; ``stretches`` scale segment durations (1 = natural).

        A crashed process is restarted after the last finished utterance; an utterance that
        fails on its own raises FestivalError naming it.
        """
        _check_allowed(voice)
        if voice not in VOICES:
            raise ValueError(f"unknown festival voice {voice!r}; known: {sorted(VOICES)}")
        spec = VOICES[voice]
        stretches = list(stretches) if stretches is not None else [1.0] * len(texts)
        if len(stretches) != len(texts):
            raise ValueError("one stretch per text")
        if not all(0.5 <= x <= 2.0 for x in stretches):
            raise ValueError(f"stretches must lie in [0.5, 2]: {stretches}")
        clips: dict[int, LabelledClip] = {}
        pending = list(range(len(texts)))
        while pending:
            done = self._run(spec, [(i, texts[i], stretches[i]) for i in pending])
            if not done:
                raise FestivalError(f"festival {voice} failed on {texts[pending[0]]!r}")
            clips.update(done)
            failed = [i for i in pending if i not in clips and i < max(done)]
            if failed:  # festival said it, but no wave or no segments came back
                raise FestivalError(f"festival {voice} failed on {texts[failed[0]]!r}")
            pending = [i for i in pending if i > max(done)]  # after a crash, if any
        return [clips[i] for i in range(len(texts))]

    def _run(self, spec: Voice, items: list[tuple[int, str, float]]) -> dict[int, LabelledClip]:
        """One festival process for ``items`` (index, text, stretch) → finished clips."""
        with tempfile.TemporaryDirectory(prefix="festival_") as tmp:
            # the voice's own Duration_Stretch (ked 1.1, NSK 1.4) is its natural rate
            script = [f"(voice_{spec.name})\n(set! vivify_base_stretch (or (Parameter.get "
                      "'Duration_Stretch) 1))\n".encode()]
            for i, text, stretch in items:
                head, tail = _UTT.format(i=i, stretch=_stretch_scheme(spec, stretch),
                                         wav=f"{tmp}/{i}.wav").split("{text}")
                script += [head.encode(), _scheme_string(_front_end_text(text, spec)),
                           tail.encode()]
            try:
                proc = subprocess.run([FESTIVAL, "--pipe"], input=b"".join(script),
                                      capture_output=True, check=False,
                                      timeout=30 + TIMEOUT_S_PER_UTTERANCE * len(items))
                stdout = proc.stdout
            except subprocess.TimeoutExpired as exc:
                stdout = exc.stdout or b""
            phones: dict[int, list[tuple[float, str, str]]] = {}
            finished: list[int] = []
            for line in stdout.decode("utf-8", "replace").splitlines():
                parts = line.split()
                if len(parts) == 5 and parts[0] == "@@S":
                    phones.setdefault(int(parts[1]), []).append(
                        (float(parts[3]), parts[2], parts[4]))
                elif len(parts) == 2 and parts[0] == "@@E":
                    finished.append(int(parts[1]))
            out = {}
            texts = {i: text for i, text, _ in items}
            for i in finished:
                wav = Path(tmp) / f"{i}.wav"
                if not wav.exists() or not phones.get(i):
                    continue
                clip = self._clip(spec, texts[i], wav, phones[i])
                if clip is not None:
                    out[i] = clip
            return out

    def _clip(self, spec: Voice, text: str, wav: Path,
              phones: list[tuple[float, str, str]]) -> LabelledClip | None:
        rate, pcm = wavfile.read(wav)
        audio = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(
            np.float32)
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        if rate != RATE:
            audio = resample(audio, int(rate), RATE)
        if audio.size == 0 or not np.any(audio):
            return None
        return LabelledClip(audio=audio, segments=self._segments(spec, phones, audio.size / RATE),
                            source=f"festival:{spec.name}", speaker=spec.name, text=text)

    def _visemes(self, spec: Voice, phone: str, vc: str) -> tuple[str, ...]:
        vis = spec.phones.get(phone)
        if vis is not None:
            return vis
        if (spec.name, phone) not in self._unknown_logged:
            self._unknown_logged.add((spec.name, phone))
            LOG.warning("festival %s: unknown phone %r (vc=%s) mapped to %s", spec.name, phone,
                        vc, "AH" if vc == "+" else "KGH")
        return ("AH",) if vc == "+" else ("KGH",)

    def _segments(self, spec: Voice, phones: list[tuple[float, str, str]], duration: float
                  ) -> list[tuple[float, float, str]]:
        """Contiguous (start, end, viseme) from 0 to the end of the audio."""
        out: list[tuple[float, float, str]] = []
        start = 0.0
        for end, name, vc in phones:
            end = min(end, duration)
            if end <= start:
                continue
            vis = self._visemes(spec, name, vc)
            step = (end - start) / len(vis)
            for k, v in enumerate(vis):
                out.append((start + k * step, start + (k + 1) * step, v))
            start = end
        if start < duration:
            if out and out[-1][2] == "SIL":
                out[-1] = (out[-1][0], duration, "SIL")
            else:
                out.append((start, duration, "SIL"))
        return out
