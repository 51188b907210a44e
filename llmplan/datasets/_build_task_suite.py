"""Builds ``task_suite.jsonl``: the profiling task suite, written for llmplan.

Every prompt below was written for this project. Short prompts are listed as-is; summarization and
translation prompts wrap the passages below (alone or concatenated) so input lengths span ~5 to
~430 tokens. Run ``python -m llmplan.datasets._build_task_suite`` to regenerate the JSONL.
"""

from __future__ import annotations

import json
from pathlib import Path

EN_PASSAGES = [
    "The night shift at the regional water plant starts with a walk along the settling tanks. Operators "
    "check the flow meters, log the chlorine residual, and listen for pumps that sound wrong before any "
    "alarm fires. Most nights nothing happens, which is exactly the point.",
    "Our team moved the nightly batch jobs from a single large server to a small cluster last spring. The "
    "move cut the average run time from five hours to ninety minutes, but it also exposed hidden ordering "
    "assumptions: two jobs had silently depended on a third finishing first. We now declare every "
    "dependency explicitly and the scheduler refuses to start a job whose inputs are not ready. The "
    "lesson was less about hardware than about writing down what we already believed was true.",
    "In the hill villages north of the river, terraced rice fields are rebuilt every spring by hand. "
    "Families share the work in a rotation that is older than anyone can remember: one household repairs "
    "the stone walls, another clears the channels that carry water from the forest, and a third mends "
    "the bamboo pipes that split the flow between terraces. Tourists photograph the green steps in "
    "summer, but the fields exist because of those cold weeks of shared labour in March. Younger people "
    "now leave for factory jobs in the city, and several terraces at the top of the slope have already "
    "gone back to scrub. The village council has started paying a small wage for repair days, funded by "
    "a fee on the guesthouses, and early results suggest that the money matters less than the fact "
    "that the work is once again seen as a public duty rather than a private burden.",
    "A small bakery on Elm Street tracked its sales for a year and found that bread sold best on rainy "
    "mornings while pastries sold best on sunny afternoons. The owner shifted baking schedules to match "
    "the weather forecast and cut daily waste by almost a third. She now orders flour two weeks ahead, "
    "keeps a simple spreadsheet of forecasts against sales, and says the most useful change was asking "
    "the staff at the counter what customers asked for but could not find. Two of the best-selling "
    "items today started as those requests.",
    "Battery storage on the grid is often described as a way to save cheap solar power for the evening, "
    "but operators increasingly use it for something less visible: frequency regulation. When a large "
    "power plant trips offline, grid frequency drops within seconds, and batteries can respond faster "
    "than any spinning generator. This service is paid separately in many markets and has become the "
    "main source of revenue for early storage projects. As more batteries connect, the price for "
    "regulation falls, and developers are shifting their business cases back toward energy arbitrage "
    "and capacity payments. Planners warn that the economics of storage will keep changing as the "
    "share of wind and solar grows, and that contracts signed today should allow for that.",
]

ZH_PASSAGES = [
    "今天早上地铁因为信号故障停运了二十分钟，很多人上班迟到。地铁公司发布通知，向乘客道歉，并表示会尽快检查设备。",
    "我们公司去年开始推行远程办公，每周员工可以在家工作两天。刚开始大家担心沟通效率会下降，但半年后的调查显示，"
    "大多数员工认为工作效率没有降低，反而因为节省了通勤时间而更有精力。管理层也发现，会议变得更短、更有重点。"
    "不过，新入职的员工反映，很难在远程环境中快速融入团队，因此公司决定为新人安排固定的导师和每周的线下交流。",
    "在江南的一座小镇上，有一家开了六十多年的茶馆。每天清晨，老人们提着鸟笼来到这里，点一壶绿茶，聊聊家常。"
    "茶馆的老板是第三代传人，他说，茶馆的生意并不赚钱，但这里是镇上老人们最重要的社交场所。近几年，来镇上旅游的"
    "年轻人越来越多，他们喜欢在茶馆里拍照，也会坐下来听老人们讲过去的故事。老板开始在周末举办评弹演出，门票很便宜，"
    "收入全部用于修缮老房子。他希望这家茶馆能继续开下去，让更多人了解小镇的生活方式。镇政府也注意到了这一点，"
    "计划把茶馆所在的老街列入保护范围，同时限制商业开发，避免老街变成千篇一律的旅游景点。",
    "城市里的共享单车曾经一度泛滥，街头到处是损坏和乱停的车辆。后来，管理部门要求企业控制投放数量，"
    "并在地铁站附近划定停车区域。用户如果把车停在区域以外，就要支付额外费用。这些措施实施一年后，"
    "街道变得整洁了许多，单车的使用率反而提高了，因为用户更容易在固定地点找到可用的车。",
]

SHORT = {
    ("qa", "en"): [
        "What is the boiling point of water at sea level?",
        "Who wrote the novel Pride and Prejudice?",
        "How many bits are in a byte?",
        "Why is the sky blue during the day?",
        "What does GPU stand for?",
        "What is the difference between RAM and disk storage?",
        "How does a vaccine train the immune system?",
        "What causes the seasons on Earth?",
        "Which planet has the most moons that we know of?",
        "What is a prime number? Give two examples.",
        "How long does light from the Sun take to reach Earth?",
        "What is the capital of Australia?",
        "Explain what inflation means for someone's savings.",
        "What is the main difference between a virus and a bacterium?",
        "Why do we have leap years?",
        "What is the speed of sound in air, roughly?",
        "Who painted the Mona Lisa?",
    ],
    ("qa", "zh"): [
        "水在海平面的沸点是多少度？",
        "《红楼梦》的作者是谁？",
        "一个字节有多少位？",
        "为什么天空是蓝色的？",
        "什么是光年？",
        "内存和硬盘有什么区别？",
        "疫苗是如何起作用的？",
        "地球为什么会有四季？",
        "中国最长的河流是哪一条？",
        "什么是质数？请举两个例子。",
        "月亮为什么会有圆缺变化？",
        "澳大利亚的首都是哪里？",
        "通货膨胀对个人存款有什么影响？",
        "病毒和细菌的主要区别是什么？",
        "为什么会有闰年？",
        "声音在空气中的传播速度大约是多少？",
        "《蒙娜丽莎》是谁画的？",
    ],
    ("chat", "en"): [
        "Hi!",
        "Good morning, how are you today?",
        "I had a rough day at work. Can we just talk for a bit?",
        "Any tips for staying focused while working from home?",
        "I'm thinking of adopting a cat. What should I know first?",
        "Can you recommend a good book for a long train ride?",
        "My friend forgot my birthday. Should I say something?",
        "What's a fun weekend activity for a rainy day?",
        "I want to start running but I get bored quickly. Ideas?",
        "Thanks for the help earlier, it worked!",
        "I can't decide between learning guitar or piano. Thoughts?",
        "Tell me something interesting I probably don't know.",
        "How do I politely decline a party invitation?",
    ],
    ("chat", "zh"): [
        "你好！",
        "早上好，今天心情怎么样？",
        "今天工作特别累，想找人聊聊天。",
        "在家办公怎么才能保持专注？",
        "我想养一只猫，需要注意什么？",
        "推荐一本适合在火车上看的书吧。",
        "朋友忘了我的生日，我要不要跟他说？",
        "下雨天周末可以做些什么有趣的事？",
        "我想开始跑步，但总是坚持不下来，有什么办法？",
        "谢谢你刚才的帮助，问题解决了！",
        "学吉他还是学钢琴，我有点纠结。",
        "给我讲一个有趣的冷知识吧。",
        "怎样礼貌地拒绝别人的聚会邀请？",
    ],
    ("generation", "en"): [
        "Write a four-line poem about autumn leaves.",
        "Write a short story about a robot who learns to bake bread.",
        "Draft a polite email asking my landlord to fix the heating.",
        "Write a product description for a waterproof hiking backpack.",
        "Write a limerick about a forgetful programmer.",
        "Write the opening paragraph of a mystery novel set on a night train.",
        "Write a toast for my sister's wedding, warm and a little funny.",
        "Write a motivational message for a team that just missed a deadline.",
        "Write a 300-word blog post about the benefits of walking meetings.",
        "Write a dialogue between a tea cup and a coffee mug arguing about mornings.",
        "Write a cover letter for a junior data analyst position.",
        "Write a children's bedtime story about a brave little snail.",
        "Write a detailed travel itinerary for three days in Kyoto.",
    ],
    ("generation", "zh"): [
        "写一首关于秋天落叶的四行小诗。",
        "写一个机器人学做面包的小故事。",
        "帮我写一封邮件，礼貌地请房东修理暖气。",
        "为一款防水登山背包写一段产品介绍。",
        "写一段适合公司年会的开场白。",
        "以夜行火车为背景，写一个悬疑小说的开头。",
        "为我姐姐的婚礼写一段温馨又有点幽默的祝酒词。",
        "给刚刚错过截止日期的团队写一段鼓励的话。",
        "写一篇三百字左右的短文，介绍散步会议的好处。",
        "写一段茶杯和咖啡杯关于早晨的对话。",
        "帮我写一封应聘初级数据分析师的求职信。",
        "写一个关于勇敢小蜗牛的睡前故事。",
        "为京都三日游写一份详细的行程安排。",
    ],
    ("code", "en"): [
        "Write a Python function that checks whether a string is a palindrome.",
        "Explain what this does: [x*x for x in range(10) if x % 2 == 0]",
        "Write a SQL query that returns the ten customers with the highest total order value.",
        "How do I reverse a linked list in C? Show the code.",
        "Write a bash one-liner that counts lines in all .py files under a directory.",
        "Fix the bug: def avg(xs): return sum(xs) / len(xs) fails on an empty list.",
        "Write a JavaScript function that debounces another function.",
        "Implement binary search in Rust and explain its complexity.",
        "Write a Python class for an LRU cache with get and put in O(1).",
        "What is the difference between a process and a thread? Include a short Python example.",
        "Write a regular expression that matches ISO 8601 dates like 2024-05-17.",
        "Write unit tests with pytest for a function add(a, b).",
        "Convert this loop to use map and filter: result = []; for n in nums: if n > 0: result.append(n * 2)",
        "Write a Dockerfile for a small Flask app that listens on port 8000.",
    ],
    ("code", "zh"): [
        "用 Python 写一个判断字符串是否为回文的函数。",
        "解释一下这段代码的作用：[x*x for x in range(10) if x % 2 == 0]",
        "写一条 SQL 查询，找出订单总金额最高的十个客户。",
        "如何用 C 语言反转一个链表？请给出代码。",
        "写一个 bash 命令，统计目录下所有 .py 文件的总行数。",
        "修复这个错误：def avg(xs): return sum(xs) / len(xs) 在空列表时会报错。",
        "用 JavaScript 实现一个防抖函数。",
        "用 Python 实现一个支持 O(1) 读写的 LRU 缓存类。",
        "进程和线程有什么区别？请给一个简短的 Python 例子。",
        "写一个匹配 2024-05-17 这种日期格式的正则表达式。",
        "用 pytest 为函数 add(a, b) 写几个单元测试。",
        "为一个监听 8000 端口的 Flask 小应用写一个 Dockerfile。",
    ],
    ("classification", "en"): [
        "Is this review positive or negative? 'The battery died after two days and support never answered.'",
        "Classify the topic (sports, politics, tech, food): 'The new chip doubles inference speed.'",
        "Positive, negative or neutral: 'The hotel was fine, nothing special.'",
        "Is this email spam? 'Congratulations! You have won a free cruise, click here now.'",
        "Label the sentiment: 'I waited an hour but the food was worth every minute.'",
        "Which department should handle this ticket (billing, shipping, tech)? 'I was charged twice.'",
        "Is this sentence a question or a statement? 'You already sent the report'",
        "Classify the language of: 'Bonjour, je voudrais un café, s'il vous plaît.'",
        "Rate the urgency from 1 to 5: 'The production database is down for all users.'",
        "Is this headline clickbait? 'You won't believe what this cat did next.'",
        "Tag the intent (book, cancel, ask): 'Can I move my reservation to Friday?'",
    ],
    ("classification", "zh"): [
        "这条评论是正面还是负面？“电池两天就坏了，客服一直不回复。”",
        "判断话题类别（体育、政治、科技、美食）：“新芯片让推理速度提升了一倍。”",
        "正面、负面还是中性：“酒店还行，没什么特别的。”",
        "这封邮件是垃圾邮件吗？“恭喜您获得免费邮轮旅行，请立即点击链接。”",
        "判断情感倾向：“等了一个小时，但菜真的很好吃。”",
        "这个工单应该交给哪个部门（账单、物流、技术）？“我被重复扣款了。”",
        "这句话是疑问句还是陈述句？“你已经把报告发出去了”",
        "判断紧急程度（1到5）：“生产数据库对所有用户都无法访问。”",
        "这个标题是标题党吗？“你绝对想不到这只猫接下来做了什么。”",
        "识别意图（预订、取消、咨询）：“能把我的预约改到周五吗？”",
    ],
}

SUMMARIZE_EN = [
    "Summarize in one sentence:\n\n{p}",
    "Give three bullet points that capture the key ideas of this text:\n\n{p}",
    "Write a short headline for the following passage:\n\n{p}",
]
SUMMARIZE_ZH = [
    "用一句话概括下面这段话：\n\n{p}",
    "请用三个要点总结下文：\n\n{p}",
    "为下面这段文字拟一个简短的标题：\n\n{p}",
]
TRANSLATE_EN = [
    "Translate into Chinese:\n\n{p}",
    "Translate the following text into Simplified Chinese, keeping the tone:\n\n{p}",
]
TRANSLATE_ZH = ["把下面这段话翻译成英文：\n\n{p}", "请将下文翻译成自然流畅的英语：\n\n{p}"]
SHORT_TRANSLATE = {
    "en": [
        "Translate into Chinese: Good night.",
        "Translate into Chinese: Where is the train station?",
        "Translate into Chinese: The meeting has been moved to Thursday afternoon.",
        "Translate into French: I would like a table for two, please.",
    ],
    "zh": [
        "翻译成英文：谢谢。",
        "翻译成英文：请问洗手间在哪里？",
        "翻译成英文：会议改到周四下午了。",
        "翻译成日语：我想要一张两个人的桌子。",
    ],
}


def _passage_sets(passages: list[str]) -> list[str]:
    """Single passages plus concatenations, to stretch inputs toward ~430 tokens."""
    longest = sorted(passages, key=len)
    combos = ["\n\n".join(longest[:2]), "\n\n".join(longest[-2:])]
    return passages + combos


# Reply budget per task (max_tokens sent by `profile collect`): roughly how long a good answer runs.
MAX_TOKENS = {"qa": 64, "chat": 64, "classification": 8, "summarization": 96, "code": 256, "generation": 256}


def _max_tokens(task: str, prompt: str) -> int:
    if task == "translation":  # a translation is about as long as its source
        return min(512, max(16, len(prompt) // 2))
    return MAX_TOKENS[task]


def build() -> list[dict]:
    rows: list[dict] = []
    for (task, lang), prompts in SHORT.items():
        rows += [{"task": task, "lang": lang, "prompt": p} for p in prompts]
    for lang, passages, summ, trans in (
        ("en", EN_PASSAGES, SUMMARIZE_EN, TRANSLATE_EN),
        ("zh", ZH_PASSAGES, SUMMARIZE_ZH, TRANSLATE_ZH),
    ):
        for i, p in enumerate(_passage_sets(passages)):
            for j, tmpl in enumerate(summ):
                if (i + j) % 3 != 2 or i >= len(passages):  # not every template on every passage
                    rows.append({"task": "summarization", "lang": lang, "prompt": tmpl.format(p=p)})
            rows.append({"task": "translation", "lang": lang, "prompt": trans[i % len(trans)].format(p=p)})
        rows += [{"task": "translation", "lang": lang, "prompt": p} for p in SHORT_TRANSLATE[lang]]
    for i, r in enumerate(rows):
        r["id"] = f"{r['task'][:4]}-{r['lang']}-{i:03d}"
    return [
        {
            "id": r["id"],
            "task": r["task"],
            "lang": r["lang"],
            "max_tokens": _max_tokens(r["task"], r["prompt"]),
            "prompt": r["prompt"],
        }
        for r in rows
    ]


if __name__ == "__main__":
    out = Path(__file__).with_name("task_suite.jsonl")
    rows = build()
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} prompts to {out}")
