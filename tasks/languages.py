"""The languages of the evaluation suite, and the benchmarks that have data for them.

Two tables. A language is one row of LANGUAGES: its code (the paper's id, used in model and task
names), name, script, and its codes in the benchmarks' own schemes (FLORES-200 `tam_Taml` for
SIB-200 and Belebele, MGSM's `te`, MLiC-Eval's and CMiLBench's `ug`). A benchmark (BENCHMARKS) declares the
languages it has data for, by its own codes, as its real release lists them; every (task family,
language) pair whose benchmark has the language's code gets tasks (tasks/suite.py). Adding a
language is one row here plus its data.

A language's role:

    target    the paper's seven (Table 3): CT models and merges are made for them, lrm_all averages them
    control   English: checks that a model knows the task at all; never merged, not in lrm_all
    extra     any other language a benchmark has (Khalkha Mongolian `khk`): evaluated only

The paper evaluates each target on some of the benchmarks that have it (`paper_suite`: Tibetan on
MLiC-Eval, although SIB-200, Belebele and CMiLBench have Tibetan too). That is the language's default suite
(`harness eval --model X`, its lrm_<lang>_<split> group, lrm_all); `--suite all` adds every other
benchmark that has the language. A language without a paper suite (an extra) defaults to all.

Real MLiC-Eval has no English; the English control's MLiC-style tasks exist only in the zoo's
synthetic data (`synthetic_only`).
"""

from dataclasses import dataclass

# The benchmarks (datasets), as keys of BENCHMARKS.
SIB200 = "sib200"
BELEBELE = "belebele"
MGSM = "mgsm"
MLIC = "mlic"
CMILBENCH = "cmilbench"

# The roles of a language.
TARGET = "target"
CONTROL = "control"
EXTRA = "extra"

ENGLISH = "eng"

# Which of a language's benchmarks a command runs: the paper's default suite, or every one with data.
DEFAULT_SUITE = "default"
ALL_SUITE = "all"
SUITES = (DEFAULT_SUITE, ALL_SUITE)


@dataclass(frozen=True)
class Language:
    code: str  # the paper's id (ISO 639-3), used in model ids and task names: ct-tam, lrm_sib_tam_test
    name: str
    script: str  # ISO 15924
    flores: str | None = None  # FLORES-200 code, SIB-200's and Belebele's name for it: tam_Taml
    mgsm: str | None = None  # MGSM's code: te
    mlic: str | None = None  # MLiC-Eval's and CMiLBench's code: ug
    role: str = TARGET
    paper_suite: tuple[str, ...] = ()  # the benchmarks the paper evaluates it on; () = all it has
    # Benchmarks in its paper suite with no real data for it: only the zoo's synthetic data has them.
    synthetic_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Benchmark:
    key: str
    code_field: str  # the Language field holding the benchmark's code for a language
    languages: frozenset[str]  # the benchmark's codes of the languages it has data for
    on_hub: bool = True  # False: no hub copy to download; its tasks read only a local --data-dir


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


BENCHMARKS: dict[str, Benchmark] = {
    b.key: b
    for b in [
        # The 205 folders of data/annotated/ in GitHub dadelani/sib-200.
        Benchmark(SIB200, "flores", _codes("""
    ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn als_Latn amh_Ethi apc_Arab
    arb_Arab arb_Latn ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn
    bak_Cyrl bam_Latn ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn
    bug_Latn bul_Cyrl cat_Latn ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn
    dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn
    fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gaz_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr
    hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn
    isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor
    kaz_Cyrl kbp_Latn kea_Latn khk_Cyrl khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kmr_Latn knc_Arab
    knc_Latn kon_Latn kor_Hang lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn
    lua_Latn lug_Latn luo_Latn lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab min_Latn
    mkd_Cyrl mlt_Latn mni_Beng mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nqo_Nkoo
    nso_Latn nus_Latn nya_Latn oci_Latn ory_Orya pag_Latn pan_Guru pap_Latn pbt_Arab pes_Arab plt_Latn
    pol_Latn por_Latn prs_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn
    shn_Mymr sin_Sinh slk_Latn slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn srd_Latn
    srp_Cyrl ssw_Latn sun_Latn swe_Latn swh_Latn szl_Latn tam_Taml taq_Latn taq_Tfng tat_Cyrl tel_Telu
    tgk_Cyrl tgl_Latn tha_Thai tir_Ethi tpi_Latn tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn
    tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn
    ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn zul_Latn
        """)),
        # The 122 variants in the README of GitHub facebookresearch/belebele (hub facebook/belebele).
        Benchmark(BELEBELE, "flores", _codes("""
    acm_Arab afr_Latn als_Latn amh_Ethi apc_Arab arb_Arab arb_Latn ars_Arab ary_Arab arz_Arab asm_Beng
    azj_Latn bam_Latn ben_Beng ben_Latn bod_Tibt bul_Cyrl cat_Latn ceb_Latn ces_Latn ckb_Arab dan_Latn
    deu_Latn ell_Grek eng_Latn est_Latn eus_Latn fin_Latn fra_Latn fuv_Latn gaz_Latn grn_Latn guj_Gujr
    hat_Latn hau_Latn heb_Hebr hin_Deva hin_Latn hrv_Latn hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn
    isl_Latn ita_Latn jav_Latn jpn_Jpan kac_Latn kan_Knda kat_Geor kaz_Cyrl kea_Latn khk_Cyrl khm_Khmr
    kin_Latn kir_Cyrl kor_Hang lao_Laoo lin_Latn lit_Latn lug_Latn luo_Latn lvs_Latn mal_Mlym mar_Deva
    mkd_Cyrl mlt_Latn mri_Latn mya_Mymr nld_Latn nob_Latn npi_Deva npi_Latn nso_Latn nya_Latn ory_Orya
    pan_Guru pbt_Arab pes_Arab plt_Latn pol_Latn por_Latn ron_Latn rus_Cyrl shn_Mymr sin_Latn sin_Sinh
    slk_Latn slv_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn
    swh_Latn tam_Taml tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi tsn_Latn tso_Latn tur_Latn ukr_Cyrl
    urd_Arab urd_Latn uzn_Latn vie_Latn war_Latn wol_Latn xho_Latn yor_Latn zho_Hans zho_Hant zsm_Latn
    zul_Latn
        """)),
        Benchmark(MGSM, "mgsm", _codes("bn de en es fr ja ru sw te th zh")),
        # Tibetan, Uyghur, Kazakh (Arabic script), Mongolian (traditional script): the hub card of pkupie/mlic-eval.
        Benchmark(MLIC, "mlic", _codes("bo ug kk mn")),
        # Tibetan, Uyghur, Mongolian (traditional script): the file names of data/Foundation_Tasks/<task>/
        # in GitHub 4real3000/CMiLBench, the only place it is published.
        Benchmark(CMILBENCH, "mlic", _codes("bo ug mn"), on_hub=False),
    ]
}

# The paper's suites (§4, Table 2): the Indic languages' (MGSM only where it has the language) and
# the minority languages of China's.
INDIC_SUITE = (SIB200, BELEBELE, MGSM)
MLIC_SUITE = (MLIC,)

LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("tam", "Tamil", "Taml", flores="tam_Taml", paper_suite=INDIC_SUITE),
        Language("tel", "Telugu", "Telu", flores="tel_Telu", mgsm="te", paper_suite=INDIC_SUITE),
        Language("ory", "Odia", "Orya", flores="ory_Orya", paper_suite=INDIC_SUITE),
        Language("ben", "Bengali", "Beng", flores="ben_Beng", mgsm="bn", paper_suite=INDIC_SUITE),
        Language("bod", "Tibetan", "Tibt", flores="bod_Tibt", mlic="bo", paper_suite=MLIC_SUITE),
        Language("uig", "Uyghur", "Arab", flores="uig_Arab", mlic="ug", paper_suite=MLIC_SUITE),
        Language("mvf", "Mongolian (traditional script)", "Mong", mlic="mn", paper_suite=MLIC_SUITE),
        Language(ENGLISH, "English", "Latn", flores="eng_Latn", mgsm="en", mlic="en", role=CONTROL,
                 paper_suite=(SIB200, BELEBELE, MGSM, MLIC), synthetic_only=(MLIC,)),
        Language("khk", "Khalkha Mongolian", "Cyrl", flores="khk_Cyrl", role=EXTRA),
    ]
}
# The languages merges are made and averaged for (paper Table 3), and the controls.
TARGET_LANGUAGES: dict[str, Language] = {code: lang for code, lang in LANGUAGES.items() if lang.role == TARGET}
CONTROL_LANGUAGES: dict[str, Language] = {code: lang for code, lang in LANGUAGES.items() if lang.role == CONTROL}


def data_code(lang: str, benchmark: str) -> str | None:
    """The benchmark's own code for a language (`tam_Taml`), or None where it has no data for it.

    The zoo's synthetic-only benchmarks of a language (English MLiC-Eval) count as having data.
    """
    language, bench = LANGUAGES[lang], BENCHMARKS[benchmark]
    code = getattr(language, bench.code_field)
    if code is None or (code not in bench.languages and benchmark not in language.synthetic_only):
        return None
    return code


def benchmarks_of(lang: str, suite: str = DEFAULT_SUITE) -> list[str]:
    """The benchmarks a language is evaluated on, in BENCHMARKS order: its default suite (the
    paper's, or all it has when the paper has none) or, for suite 'all', every one with its data."""
    language = LANGUAGES[lang]
    available = [key for key in BENCHMARKS if data_code(lang, key) is not None]
    if suite == ALL_SUITE or not language.paper_suite:
        return available
    return [key for key in available if key in language.paper_suite]
