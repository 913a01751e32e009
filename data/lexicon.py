"""Word lists and sentence frames for the keystroke simulator (data/simulator.py).

Twelve topics, each with its own nouns, verbs, adjectives, places, topic-only frames and
closing phrases (`c`: "love you", "safe travels");
a shared pool of everyday frames whose slots are filled from the message's topic; contact
names; reactions and slang. Inflections (plurals, -ing) are derived by rule so the lists stay
short. Everything is plain data; the simulator decides how often each piece is used.

Frame syntax: literal words, plus slots `{n}` noun, `{ns}` plural noun, `{v}` verb,
`{vi}` verb -ing, `{a}` adjective, `{p}` place, `{name}` a contact, `{time}` a time phrase,
`{num}` a small number.
"""

from __future__ import annotations

from dataclasses import dataclass

_TOPICS_RAW: dict[str, dict[str, str]] = {
    "work": dict(
        c="thanks|talk soon|cheers|will keep you posted|let me know what you think",
        n="meeting report deadline email project client boss office presentation budget schedule "
          "contract invoice team manager call spreadsheet slide review proposal interview shift "
          "colleague agenda update feedback task conference printer laptop desk promotion salary "
          "quarter target account meeting_room memo draft deck minutes ticket release launch pitch "
          "onboarding training workshop survey timesheet vendor quote order shipment handover "
          "standup retro roadmap dashboard metrics login portal badge parking payroll overtime",
        v="send finish review check schedule call present sign update print submit prepare cancel "
          "move join fix discuss approve email forward book draft share attend reschedule confirm "
          "assign escalate upload merge ship deploy hire",
        a="busy urgent late early important boring stressful productive quick long final new remote "
          "hybrid overdue tight rough solid",
        p="office meeting_room conference_room lobby cafeteria warehouse headquarters branch",
        f="the {n} got moved to {time}|can you {v} the {n} before the meeting|i have a {n} with my "
          "boss {time}|still working on the {n}|the client wants the {n} by {time}",
    ),
    "family": dict(
        c="love you|hugs|miss you all|give the kids a hug from me|love you lots",
        n="mom dad sister brother grandma grandpa aunt uncle cousin baby kids son daughter wife "
          "husband family birthday dinner house dog cat present card photo holiday wedding "
          "anniversary nephew niece parents visit party toddler stroller crib diaper nap bath "
          "bedtime chores allowance homework grandkids pets puppy kitten reunion barbecue photos "
          "album christening graduation recital",
        v="call visit pick hug help clean cook feed bring wrap celebrate invite babysit drive tuck "
          "feed bathe adopt raise miss surprise spoil",
        a="sweet happy cute tired sick proud lovely funny little old excited grumpy naughty "
          "adorable cranky sleepy quiet loud",
        p="grandma's home church backyard kitchen nursery school daycare",
        f="tell {name} happy birthday from me|mom says dinner is at {time}|the kids are finally "
          "asleep|can you pick up the kids {time}|love you all so much",
    ),
    "food": dict(
        c="bon appetit|save me some|can't wait to eat|so hungry now|my treat next time",
        n="pizza pasta burger salad sandwich coffee tea breakfast lunch dinner soup tacos sushi "
          "chicken rice bread cake cookies pancakes eggs cheese wine beer dessert recipe restaurant "
          "menu snack curry noodles bagel smoothie fries steak avocado toast omelette waffles "
          "burrito ramen dumplings kebab lasagna risotto brownies muffins croissant latte espresso "
          "cappuccino milkshake popcorn chips salsa guacamole hummus leftovers takeout groceries "
          "pie",
        v="eat cook order grab try make bake share taste drink pick reheat microwave grill fry boil "
          "chop slice split finish crave",
        a="delicious hungry spicy sweet fresh tasty cold hot yummy greasy healthy cheap crispy "
          "salty sour fancy homemade vegan filling gross",
        p="cafe diner bakery kitchen restaurant food_court pizzeria bar",
        f="what do you want for dinner|i'm starving|let's order {n} tonight|the {n} at that place "
          "is so good|i'm making {n} for lunch",
    ),
    "sports": dict(
        c="let's go|go team|see you at the game|rematch soon|what a game",
        n="game match team score goal coach season league player ball training practice tickets "
          "playoffs referee stadium bike gym workout run marathon tournament final jersey halftime "
          "pitch court field race league_table transfer striker keeper midfield inning pitcher "
          "quarterback touchdown rebound dunk lap sprint yoga pilates treadmill weights dumbbells "
          "rowing climbing hike trail",
        v="play watch win lose train score run lift bike swim cheer kick throw stretch jog hike "
          "climb row dribble tackle coach",
        a="amazing terrible close fast strong tired sore ready competitive unreal insane brutal "
          "sweaty fit injured pumped undefeated",
        p="stadium gym park field court pool arena track",
        f="did you see the game last night|the game starts at {time}|we won {num} to {num}|going to "
          "the gym after work|that goal was unreal",
    ),
    "travel": dict(
        c="safe travels|have a great trip|send pics|text me when you land|bon voyage",
        n="flight train bus ticket hotel passport luggage airport trip vacation beach map booking "
          "reservation gate delay taxi uber car road suitcase boarding_pass visa itinerary tour "
          "island city mountains layover check_in customs security lounge cruise ferry rental "
          "hostel airbnb sightseeing souvenir postcard jetlag timezone currency adapter backpack "
          "campsite roadtrip",
        v="book pack land leave arrive drive fly check rent catch miss travel explore unpack board "
          "transfer commute wander cross",
        a="delayed early late cheap expensive beautiful sunny crowded long direct amazing scenic "
          "remote tropical exhausting smooth bumpy",
        p="airport station hotel beach downtown terminal highway border",
        f="just landed|my flight is delayed again|boarding now|the hotel is really nice|we should "
          "book the {n} soon",
    ),
    "school": dict(
        c="good luck|you got this|study hard|wish me luck|see you in class",
        n="homework exam test class teacher essay assignment grade lecture notes project quiz "
          "library professor semester course chapter textbook deadline study group presentation lab "
          "paper thesis tutor syllabus midterm finals rubric flashcards worksheet seminar tutorial "
          "transcript scholarship dorm roommate locker recess field_trip calculator laptop "
          "highlighter",
        v="study finish submit read write review revise pass fail attend explain print memorize "
          "cram skip grade research cite outline",
        a="hard easy due boring confusing long final difficult stressful done mandatory optional "
          "curved strict lenient",
        p="library campus classroom lab dorm cafeteria lecture_hall",
        f="did you finish the {n}|the exam is on {time}|can i borrow your notes|i need to study for "
          "the {n}|the professor moved the {n} to {time}",
    ),
    "health": dict(
        c="get well soon|feel better|take care|rest up|drink lots of water",
        n="doctor appointment medicine headache cold fever pharmacy prescription dentist checkup "
          "sleep nap vitamins flu cough allergy back knee therapy hospital test results shot "
          "vaccine bandage stitches xray scan bloodwork physio massage diet calories water steps "
          "insomnia migraine rash bruise sprain inhaler",
        v="rest sleep take feel recover book cancel heal stretch breathe ice elevate hydrate "
          "meditate monitor schedule",
        a="sick tired better worse sore dizzy exhausted fine okay healthy swollen itchy nauseous "
          "achy stiff dehydrated",
        p="hospital clinic pharmacy dentist doctor's",
        f="i'm feeling a bit sick|i have a doctor appointment {time}|feel better soon|i think i'm "
          "getting a cold|take your medicine",
    ),
    "shopping": dict(
        c="thanks so much|send me the link|shop till you drop|happy shopping|don't spend too much",
        n="store mall sale shoes jacket dress shirt jeans groceries milk bread eggs list order "
          "package delivery discount coupon receipt bag price gift cart size hoodie sweater "
          "sneakers boots socks leggings skirt coat scarf gloves sunglasses wallet purse backpack "
          "perfume makeup shampoo detergent toilet_paper batteries",
        v="buy grab return order pick try need get deliver pay browse compare exchange splurge "
          "refund wishlist",
        a="cheap expensive cute new comfy nice big small perfect cheaper pricey flimsy stylish "
          "trendy sturdy baggy",
        p="mall store supermarket market outlet target costco pharmacy",
        f="do we need anything from the store|can you grab some {n} on the way|my package finally "
          "arrived|this {n} was on sale|it was half off",
    ),
    "tech": dict(
        c="thanks for the help|you're a lifesaver|hope that works|fingers crossed|restart it and see",
        n="phone laptop app update wifi password charger battery screen computer game account email "
          "internet printer keyboard headphones camera photo video message signal bug settings code "
          "server router modem cable mouse monitor tablet watch earbuds speaker storage cloud "
          "backup firmware notification tab browser extension plugin repo branch commit",
        v="download install update charge fix restart reset send upload text call back sync reboot "
          "unplug debug format scroll swipe",
        a="broken slow dead new old fast annoying weird frozen cracked laggy buggy outdated "
          "wireless glitchy",
        p="apple_store repair_shop office home",
        f="my phone is about to die|the wifi is down again|did you get my text|can you send me the "
          "{n}|my {n} stopped working",
    ),
    "weather": dict(
        c="stay warm|stay dry|drive safe|stay cool|be careful out there",
        n="rain snow sun weather storm wind umbrella jacket forecast heat cold traffic morning "
          "afternoon weekend sky clouds thunder hail fog drizzle heatwave blizzard tornado "
          "hurricane sleet frost puddles mud sunscreen hat boots gloves",
        v="rain snow pour freeze melt clear bring wear shovel drizzle warm cool",
        a="cold hot sunny rainy windy freezing humid cloudy nice gross chilly muggy breezy stormy "
          "foggy mild",
        p="outside downtown beach park",
        f="it's pouring outside|bring an umbrella|the forecast says rain {time}|it's so hot "
          "today|the roads are icy",
    ),
    "entertainment": dict(
        c="no spoilers|enjoy the show|so good|you have to watch it|let me know what you think",
        n="movie show episode season series concert song album band tickets netflix trailer game "
          "book podcast playlist theater comedy ending character actor sequel prequel documentary "
          "anime cartoon musical opera gig festival lineup setlist remix cover lyrics chorus vinyl "
          "comic novel audiobook",
        v="watch listen stream play read binge see recommend download finish rewatch pause skip "
          "queue rate review",
        a="amazing boring funny scary sad good awesome weird overrated epic hilarious mediocre "
          "underrated cringe wholesome",
        p="theater cinema arena venue club",
        f="have you watched the new {n}|no spoilers please|that ending was crazy|we should go see a "
          "movie {time}|this song is stuck in my head",
    ),
    "plans": dict(
        c="see you soon|see you there|can't wait|bring snacks|don't be late",
        n="plans party drinks dinner weekend tonight brunch trip reservation hangout movie game "
          "night bbq picnic meetup ride karaoke bowling escape_room trivia pub_quiz sleepover "
          "housewarming potluck barbecue road_trip carpool",
        v="meet come go hang grab pick join leave head bring host cancel reschedule rsvp organize "
          "invite",
        a="free busy down late early ready fun chill spontaneous last_minute low_key packed",
        p="bar pub park place cafe beach downtown your_place my_place",
        f="are you free {time}|what time should we meet|i'm on my way|running a bit late|see you "
          "there|let me know when you're here",
    ),
}

GENERIC_FRAMES = (
    "i need to {v} the {n} {time}", "did you {v} the {n}", "the {n} was so {a}",
    "can we {v} the {n} {time}", "{name} said the {n} is {a}", "let me know if you want to {v}",
    "i think we should {v} the {n}", "are you coming to the {p} {time}", "have you seen the {n}",
    "i'm {vi} the {n} right now", "we're {vi} at the {p}", "just got to the {p}",
    "the {ns} are really {a}", "do you want to {v} {time}", "i forgot to {v} the {n}",
    "can you {v} me the {n}", "i'll {v} it {time}", "is the {n} still {a}",
    "we need more {ns}", "that {n} is so {a}", "meet me at the {p}",
    "i can't find my {n}", "where did you put the {n}", "thanks for the {n}",
    "i'm so {a} right now", "it was really {a}", "what about the {n}",
    "i'll be at the {p} at {time}", "how was the {n}", "did {name} {v} the {n}",
    "i just finished {vi} the {n}", "we should {v} more often", "can't wait for the {n}",
    "i love this {n}", "that sounds {a}", "not sure about the {n}",
    "the {n} is at the {p}", "{name} is {vi} the {n}", "call me when you {v} the {n}",
    "should i {v} the {n} or not", "why is the {n} so {a}", "we can {v} after the {n}",
    "i was going to {v} the {n} but", "do you know where the {p} is", "my {n} is {a} again",
    "{name} wants to {v} the {n} {time}", "no one told me about the {n}", "i'll text you when i {v}",
    "the {a} one or the {a} one", "maybe we can {v} at the {p}", "you left your {n} at the {p}",
    "i'm not {vi} the {n} {time}", "is it {a} at the {p}", "got your {n}",
    "how much was the {n}", "we ran out of {ns}", "i'll bring the {ns}",
    "have to {v} the {n} first", "are the {ns} {a}", "guess who i saw at the {p}",
    "can you remind me to {v} the {n}", "so {a} that i had to {v}", "there's a {a} {n} at the {p}",
    "i'd rather {v} {time}", "did you hear about the {n}", "it's not that {a}",
    "tell {name} to {v} the {n}", "i'm still at the {p}", "which {n} do you want",
)

FILLERS = ("really", "just", "actually", "so", "kinda", "literally", "totally", "probably",
           "definitely", "honestly", "still", "already")

CONNECTORS = ("and", "but", "so", "also", "btw", "anyway", "oh and", "plus")

# Time phrases by message mood (see MOOD_MODALS): plans look ahead, duties are near, chances vague.
MOOD_TIMES = (("tomorrow", "this weekend", "next week", "on monday", "on friday", "on saturday",
               "on sunday", "next month"),
              ("today", "this morning", "this afternoon", "after work", "at noon", "before lunch",
               "at {num}", "at {num} 30", "right now", "asap"),
              ("later", "tonight", "in an hour", "sometime", "at some point", "maybe later",
               "if there's time", "whenever"))

NUMBERS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "15", "20")

NAMES = ("sam alex jordan taylor chris pat jamie casey morgan riley emma olivia ava sophia mia "
         "liam noah mason ethan lucas ben jack will dan matt mike dave tom nick josh ryan kevin "
         "sarah kate anna lily grace chloe ella zoe nora ruby leo max theo finn oscar arlo jude "
         "maria jose carlos sofia diego lucia mateo elena priya arjun rohan ananya kavya wei "
         "jun mei yuki kenji hana omar fatima yusuf aisha amir layla zara hamza ivan olga "
         "nikolai anya dmitri kofi ama kwame abena tunde chioma femi ngozi sipho thandi "
         "lena felix hugo clara ines paulo bruno lars astrid sven freya ingrid nils tariq "
         "nadia samir rania karim dina gabe jess becca steph danny mikey sully bex trish").split()

REACTIONS = ("lol", "haha", "omg", "lmao", "ok", "okay", "sure", "yes", "yeah", "nope", "no worries",
             "sounds good", "on my way", "love you", "thank you", "thanks", "cool", "nice",
             "awesome", "oh no", "same", "ugh", "wow", "true", "fair enough", "got it",
             "miss you", "good night", "good morning", "no way", "for real", "yay")

GREETINGS = ("hey", "hi", "hello", "yo", "morning", "hey hey", "hiya", "sup")

SLANG = {"you": "u", "your": "ur", "are": "r", "okay": "k", "tonight": "tonite",
         "because": "cuz", "thanks": "thx", "please": "pls", "really": "rly", "people": "ppl",
         "tomorrow": "tmrw", "going": "goin", "see": "c", "about": "abt", "probably": "prob"}


@dataclass(frozen=True)
class Topic:
    """One topic's word lists and its own frames (already parsed)."""

    name: str
    nouns: tuple[str, ...]
    plurals: tuple[str, ...]
    verbs: tuple[str, ...]
    verbs_ing: tuple[str, ...]
    adjectives: tuple[str, ...]
    places: tuple[str, ...]
    frames: tuple[tuple[str, ...], ...]
    closers: tuple[tuple[str, ...], ...]


def plural(noun: str) -> str:
    """English plural by the regular rules (the lists avoid irregular nouns)."""
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def ing(verb: str) -> str:
    """The -ing form by the regular spelling rules."""
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    vowels = "aeiou"
    if (len(verb) <= 4 and len(verb) >= 3 and verb[-1] not in vowels + "wxy"
            and verb[-2] in vowels and verb[-3] not in vowels):
        return verb + verb[-1] + "ing"
    return verb + "ing"


def parse_frame(frame: str) -> tuple[str, ...]:
    """A frame string as a tuple of literal words and `{slot}` tokens."""
    return tuple(frame.split())


def _words(raw: str) -> tuple[str, ...]:
    return tuple(w.replace("_", " ") for w in raw.split())


def build_topics() -> tuple[Topic, ...]:
    """All topics, word lists deduplicated in order and inflected."""
    topics = []
    for name, raw in _TOPICS_RAW.items():
        nouns = tuple(dict.fromkeys(_words(raw["n"])))
        verbs = tuple(dict.fromkeys(_words(raw["v"])))
        topics.append(Topic(
            name=name,
            nouns=nouns,
            plurals=tuple(plural(n) for n in nouns),
            verbs=verbs,
            verbs_ing=tuple(ing(v) for v in verbs),
            adjectives=tuple(dict.fromkeys(_words(raw["a"]))),
            places=tuple(dict.fromkeys(_words(raw["p"]))),
            frames=tuple(parse_frame(f) for f in raw["f"].split("|")),
            closers=tuple(parse_frame(c) for c in raw["c"].split("|")),
        ))
    return tuple(topics)


TOPICS = build_topics()

# A small phrase grammar for statements and questions (data/simulator.py `_Writer.clause`):
#   statement: SUBJECT MODAL {v} DET {n} [PP] [{time}]
#   question:  QWORD Q_MODAL Q_SUBJECT {v} DET {n} [PP] [{time}]

# A message's mood, chosen once, sets the modals of all its clauses (plans, duties, chances):
# long-range structure a trigram cannot see. Modals need no subject agreement ("he will").
MOOD_MODALS = (("will", "won't", "would", "will probably"),
               ("should", "must", "gotta", "shouldn't", "really should"),
               ("can", "could", "might", "can't", "may"))
MOOD_Q_MODALS = (("will", "won't", "would"), ("should", "do", "must"), ("can", "could", "might"))
# ... and who the clauses are about, and how its questions open
MOOD_SUBJECTS = (("we", "everyone", "{name}", "my friend", "the kids"),
                 ("i", "my boss", "my sister", "he", "you"),
                 ("they", "my mom", "my brother", "she", "you"))
MOOD_Q_SUBJECTS = (("we", "{name}"), ("i", "you"), ("they", "you"))
MOOD_QWORDS = (("when", "what time", "so when"), ("why", "how", "ok so"), ("where", "how", "so when"))
DETERMINERS = ("the", "my", "your", "a", "some", "that", "this", "our", "his", "her", "their", "another")
PREPOSITIONS = ("at the {p}", "for {name}", "with {name}", "before the {n}", "after the {n}",
                "near the {p}", "from the {p}", "for the {n}", "on the way", "with the {ns}")
GENERIC_VERBS = ("get", "check", "bring", "see", "find", "take", "need", "love", "try", "grab", "sort",
                 "handle", "do", "finish", "share", "keep")
INTENSIFIERS = ("really", "super", "pretty", "kinda", "so", "very", "too")
