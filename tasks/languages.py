"""The languages of the evaluation suite: the seven targets (paper §4) and the English control.

A language lists the datasets it is evaluated on, each with the dataset's own code for it; its
task families are those of its datasets (`tasks.suite.families_of`):

    SIB200, BELEBELE   FLORES codes (tam_Taml)   -> families sib, belebele
    MGSM               MGSM codes (te)           -> family mgsm
    MLIC               MLiC-Eval codes (ug)      -> families mlic_tc, mlic_mrc, mlic_rs, mlic_math

English (`eng`) is a control, not a target: it answers "does the model know the task at all",
so no CT model, merge or whole-suite average (`lrm_all_<split>`) is made for it. Real MLiC-Eval
has no English split: English MLiC-style tasks exist only in the zoo's synthetic data.
"""

from dataclasses import dataclass

# The datasets, as keys of Language.data_codes.
SIB200 = "sib200"
BELEBELE = "belebele"
MGSM = "mgsm"
MLIC = "mlic"

ENGLISH = "eng"


@dataclass(frozen=True)
class Language:
    code: str  # the paper's id, used in model ids: ct-tam, ties-uig-flan
    name: str
    script: str  # ISO 15924
    data_codes: dict[str, str]  # dataset -> the dataset's own code for the language: {SIB200: "tam_Taml"}
    control: bool = False  # True: evaluated to check the task is known (English), never a merge target
    # Datasets with no real split in this language: only the zoo's synthetic data has them.
    synthetic_only: tuple[str, ...] = ()


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("tam", "Tamil", "Taml", {SIB200: "tam_Taml", BELEBELE: "tam_Taml"}),
        Language("tel", "Telugu", "Telu", {SIB200: "tel_Telu", BELEBELE: "tel_Telu", MGSM: "te"}),
        Language("ory", "Odia", "Orya", {SIB200: "ory_Orya", BELEBELE: "ory_Orya"}),
        Language("ben", "Bengali", "Beng", {SIB200: "ben_Beng", BELEBELE: "ben_Beng", MGSM: "bn"}),
        Language("bod", "Tibetan", "Tibt", {MLIC: "bo"}),
        Language("uig", "Uyghur", "Arab", {MLIC: "ug"}),
        Language("mvf", "Mongolian (traditional script)", "Mong", {MLIC: "mn"}),
        Language(ENGLISH, "English", "Latn", {SIB200: "eng_Latn", BELEBELE: "eng_Latn", MGSM: "en", MLIC: "en"},
                 control=True, synthetic_only=(MLIC,)),
    ]
}
# The languages merges are made and averaged for (paper Table 3), and the controls.
TARGET_LANGUAGES: dict[str, Language] = {code: lang for code, lang in LANGUAGES.items() if not lang.control}
CONTROL_LANGUAGES: dict[str, Language] = {code: lang for code, lang in LANGUAGES.items() if lang.control}
