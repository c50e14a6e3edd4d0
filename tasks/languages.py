"""The seven target languages and the benchmark suite each one is evaluated on (paper §4)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # the paper's id, used in model ids: ct-tam, ties-uig-flan
    name: str
    script: str  # ISO 15924
    suite: str  # "flores" (SIB-200, Belebele, MGSM) or "mlic" (MLiC-Eval)
    data_code: str  # the dataset's own language code: tam_Taml for FLORES-based sets, ug for MLiC-Eval
    mgsm: str | None = None  # MGSM language code where MGSM covers the language


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("tam", "Tamil", "Taml", "flores", "tam_Taml"),
        Language("tel", "Telugu", "Telu", "flores", "tel_Telu", mgsm="te"),
        Language("ory", "Odia", "Orya", "flores", "ory_Orya"),
        Language("ben", "Bengali", "Beng", "flores", "ben_Beng", mgsm="bn"),
        Language("bod", "Tibetan", "Tibt", "mlic", "bo"),
        Language("uig", "Uyghur", "Arab", "mlic", "ug"),
        Language("mvf", "Mongolian (traditional script)", "Mong", "mlic", "mn"),
    ]
}
