"""Every reason an enrolment photo or an enrolment can be refused, in the words the staff screen shows (the
centre's language): what is wrong, then what to do. meal-enroll prints the English detail of enroll/quality.py
and enroll/service.py (enroll/photochecks.py); the staff screen's enrolment page (enroll/enrol_page.py) shows these.

The keys are the stable codes of enroll.quality.REASONS, enroll.results.PHOTO_CODES and PROBLEM_CODES, the
camera capture's waiting states (enroll.capture) and the page's own upload checks. tests/test_enrol_words.py
finds every code those modules can give and fails when one has no text here.
"""

from __future__ import annotations

from edge.meals.feedback import Language
from enroll import capture, quality, results

#: an uploaded file larger than the page takes (checked before it is decoded)
TOO_LARGE = "too_large"
#: the upload was not a file at all (an empty file field)
NO_FILE = "no_file"

_W: dict[str, dict[Language, str]] = {
    # -- one photo: enroll.quality
    quality.UNREADABLE: {
        "zh": "无法读取这张照片（文件损坏或不是照片）：请重新拍摄，或换一张 JPG/PNG 照片",
        "en": "This file cannot be read (damaged, or not a photo): take it again, or use a JPG/PNG photo",
    },
    quality.NO_FACE: {
        "zh": "没有找到人脸：请老人正对镜头，摘下帽子、口罩或墨镜",
        "en": "No face found: face the camera, remove hat, mask or sunglasses",
    },
    quality.MANY_FACES: {
        "zh": "检测到两张或更多的脸，请只让老人一人入镜",
        "en": "More than one face: only the senior may be in the picture",
    },
    quality.TOO_SMALL: {"zh": "脸太小，请走近一点", "en": "The face is too small: move closer"},
    quality.CUT_OFF: {
        "zh": "脸被照片边缘切掉了：请让整个头部都在画面中",
        "en": "The face is cut off by the edge: keep the whole head in the picture",
    },
    quality.TOO_DARK: {
        "zh": "太暗：请在脸的前方加光，不要背对窗户",
        "en": "Too dark: add light in front of the face, no window behind the person",
    },
    quality.TOO_BRIGHT: {
        "zh": "太亮：请关掉闪光灯，避开阳光直射",
        "en": "Too bright: no flash, out of direct sunlight",
    },
    quality.BLURRED: {
        "zh": "照片模糊，请保持不动（也请擦干净镜头）",
        "en": "Blurred: hold still (and clean the lens)",
    },
    quality.TURNED: {
        "zh": "脸转得太偏或头歪了：请正对镜头，头摆正",
        "en": "Face turned or tilted: look straight at the camera, head upright",
    },
    # -- one photo: enroll.photochecks, against the other photos and the enrolled seniors
    results.DUPLICATE: {
        "zh": "这张脸与一位已登记的老人很像，可能已经登记过：请核对编号；如确是不同的人（如双胞胎），请找负责人",
        "en": "Looks like a senior already enrolled: check the id; if they really are different people "
        "(twins), ask the manager",
    },
    results.DISAGREES: {
        "zh": "这张照片看起来不是同一个人：请确认是这位老人的照片",
        "en": "This photo does not look like the same person: check it is this senior",
    },
    results.CAPACITY: {
        "zh": "这位老人的照片已满（最多 5 张），这张没有保存",
        "en": "This senior already has the most photos allowed (5): not saved",
    },
    results.SAME_PHOTO: {
        "zh": "这张照片已经登记过，已跳过",
        "en": "This same photo is already enrolled: skipped",
    },
    # -- enrolled, with a warning: enroll.results.WARNING_CODES
    results.LOOKALIKE: {
        "zh": "注意：这位老人与另一位已登记的老人长得很像（如兄弟姐妹），签到时可能需要工作人员确认",
        "en": "Note: looks much like another enrolled senior (a sibling?): check-ins may need staff to confirm",
    },
    # -- the camera: enroll.capture's waiting states
    capture.SAME_POSE: {
        "zh": "和已拍的照片一样：请老人稍微转一下头或点一下头",
        "en": "Same as a picture already taken: turn or nod the head a little",
    },
    capture.NO_PICTURE: {
        "zh": "收不到签到机摄像头的画面：请确认签到程序（meal-edge）正在运行、摄像头已接好",
        "en": "No picture from the kiosk camera: check that meal-edge is running and the camera is plugged in",
    },
    # -- the page's own upload checks
    TOO_LARGE: {
        "zh": "文件太大（{size}，最多 {limit}）：请用手机的“压缩”或较小的尺寸重新发送",
        "en": "File too large ({size}, at most {limit}): send a smaller copy",
    },
    NO_FILE: {"zh": "没有选择照片文件", "en": "No photo file was chosen"},
    # -- the whole enrolment: enroll.results.PROBLEM_CODES
    results.EMPTY_ID: {"zh": "请填写老人编号（区里给的编号）", "en": "Give the senior's id (the district's)"},
    results.BAD_ID: {
        "zh": "编号里不能有空格或 / + # ; ：请只用字母和数字",
        "en": "The id may not contain spaces or / + # ;: letters and digits only",
    },
    results.EMPTY_NAME: {"zh": "请填写姓名（与身份证一致）", "en": "Give the name as on the ID card"},
    results.EMPTY_HUKOU: {"zh": "请填写户籍所在区", "en": "Give the hukou district"},
    results.FUTURE_BIRTH: {
        "zh": "出生日期在今天之后：请核对年份", "en": "The birth date is in the future: check the year"
    },
    results.BAD_STATUS: {"zh": "状态不对", "en": "Unknown status"},
    results.ID_TAKEN: {
        "zh": "这个编号已登记给另一位老人（姓名、出生日期或户籍不同）：请核对编号",
        "en": "This id is enrolled with other details (name, birth date or hukou): check the id",
    },
    results.NO_PHOTOS: {"zh": "没有照片：请拍照或上传 1 到 5 张照片", "en": "No photos: take or upload 1 to 5"},
    results.TOO_MANY_PHOTOS: {"zh": "照片太多：最多 5 张", "en": "Too many photos: at most 5"},
    results.ALREADY_ENROLLED: {
        "zh": "此人看起来已登记为另一位老人，没有登记：请核对编号，或找负责人",
        "en": "This person looks already enrolled as another senior: not enrolled; check the id or ask the manager",
    },
    results.NOT_SAVED: {
        "zh": "没有保存（存储出错）：请稍后再试，仍不行请联系技术人员",
        "en": "Not saved (store error): try again later, or call the technician",
    },
}

#: every code this module words (tests/test_enrol_words.py checks nothing is missing)
CODES = frozenset(_W)


def reason(code: str, lang: Language, **kw: object) -> str:
    """The words for `code`; an unknown code is shown as is rather than hidden (the test keeps that from
    happening)."""
    texts = _W.get(code)
    if texts is None:
        return code
    text = texts[lang]
    return text.format(**kw) if kw else text
